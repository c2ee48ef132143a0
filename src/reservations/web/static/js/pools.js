// "Any free …" in the New booking form: a pool by tag (POST /v1/reservations with `pool`),
// offered for each tag that two or more resources of one time zone share (the typed times
// are in that zone). The server picks the resource: docs/pools.md.

const PREFIX = "pool:";

// The tags worth offering: shared by two or more resources, all in one zone.
function pools(resources) {
  const byTag = new Map();
  for (const r of resources) {
    for (const tag of r.tags || []) {
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(r);
    }
  }
  return [...byTag.entries()]
    .filter(([, rs]) => rs.length > 1 && new Set(rs.map((r) => r.timezone)).size === 1)
    .sort(([a], [b]) => a.localeCompare(b));
}

// An <optgroup> of "Any free <tag>" options for the resource select (null when none).
export function poolGroup(resources) {
  const found = pools(resources);
  if (!found.length) return null;
  const group = document.createElement("optgroup");
  group.label = "Any free";
  for (const [tag, rs] of found) {
    const o = document.createElement("option");
    o.value = PREFIX + tag;
    o.textContent = `Any free ${tag} (${rs.length}, ${rs[0].timezone})`;
    group.append(o);
  }
  return group;
}

// For a select value: {tag, resources} of a pool, or null for a single resource.
export function poolOf(value, resources) {
  if (!value || !value.startsWith(PREFIX)) return null;
  const tag = value.slice(PREFIX.length);
  const members = resources.filter((r) => (r.tags || []).includes(tag));
  return members.length ? { tag, resources: members } : null;
}

"""TypeScript types generated from the live /openapi.json work unmodified: openapi-typescript 7
(npm, default configuration) exits 0 and prints nothing but its two progress lines, with every
operation (path and method) in `paths` and `operations`; and tsc (strict) accepts the output
together with checks that each path's method is its operation and that each response and
request body is the schema the document names for it, problem bodies per status included.
Controls show both checks can fail: a document with a bad discriminator makes the generator
warn, and one wrong type assertion is the only error tsc reports.

The tools come from npm into a cache the runs share (tests/support/npm.py); without node and
npm the tests skip saying so, except under CI, where they fail."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import npm
from tests.support.live import LiveServer

pytestmark = [
    pytest.mark.slow,
    # The document is the same whatever PostgreSQL is behind the API: CI's first pass
    # (embedded PostgreSQL 18) runs these; the second, against TEST_DATABASE_URL, does not again.
    pytest.mark.skipif(
        bool(os.environ.get("TEST_DATABASE_URL")),
        reason="runs in the pass on the embedded servers, not again against TEST_DATABASE_URL",
    ),
]

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PATH_LINE = re.compile(r'^    "(?P<path>[^"]+)": \{$')
METHOD_LINE = re.compile(
    rf'^        (?P<method>{"|".join(METHODS)}): operations\["(?P<operation>[^"]+)"\];$'
)
OPERATION_LINE = re.compile(r"^    (?P<operation>\w+): \{$")


@dataclass
class Generated:
    done: subprocess.CompletedProcess[str]
    where: Path
    version: str

    @property
    def types(self) -> str:
        return (self.where / "schema.d.ts").read_text()


@pytest.fixture(scope="module")
def modules() -> Path:
    return npm.installed()


@pytest.fixture(scope="module")
def document(database_url: str, redis_server: Any) -> Iterator[dict[str, Any]]:
    from tests.support.live import start_live_server, stop_live_server

    npm.node()  # skip (or fail under CI) before starting a server
    server: LiveServer = start_live_server(database_url, **redis_server.env())
    try:
        yield dict(httpx.get(server.url + "/openapi.json").json())
    finally:
        stop_live_server(server)


def _generate(modules: Path, document: dict[str, Any], where: Path) -> Generated:
    """openapi-typescript as its README runs it, writing a file (to stdout it would hold its
    warnings back), in a directory with no redocly.yaml: the default configuration."""
    where.mkdir(parents=True)
    (where / "openapi.json").write_text(json.dumps(document))
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"} | {"NO_COLOR": "1"}
    done = subprocess.run(
        [
            npm.node(),
            str(modules / "openapi-typescript" / "bin" / "cli.js"),
            "openapi.json",
            "--output",
            "schema.d.ts",
        ],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Generated(done=done, where=where, version=npm.version(modules, "openapi-typescript"))


def _unexpected_output(generated: Generated) -> list[str]:
    """What the generator said besides its banner and its one line per file written: its
    warnings (` ⚠  ...`) and errors (` ✘  ...`) go to stderr, so does anything node says."""
    banner = f"✨ openapi-typescript {generated.version}"
    wrote = re.compile(r"🚀 openapi\.json → schema\.d\.ts \[[\d.]+m?s\]")
    out = generated.done.stdout.splitlines()
    said = [line for line in out if line != banner and not wrote.fullmatch(line)]
    if out[:1] != [banner] or len(out) != 2:
        said.append(f"stdout is not the banner and one file line: {out!r}")
    return said + [f"stderr: {line}" for line in generated.done.stderr.splitlines()]


@pytest.fixture(scope="module")
def generated(
    modules: Path, document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Generated:
    return _generate(modules, document, tmp_path_factory.mktemp("typescript") / "gen")


def _operations(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (path, method, op["operationId"])
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def _interface(types: str, name: str) -> list[str]:
    lines = types.splitlines()
    start = lines.index(f"export interface {name} {{")
    return lines[start + 1 : lines.index("}", start)]


def _generated_paths(types: str) -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    path = None
    for line in _interface(types, "paths"):
        if m := PATH_LINE.match(line):
            path = m["path"]
        elif (m := METHOD_LINE.match(line)) and path is not None:
            found.add((path, m["method"], m["operation"]))
    return found


def _generated_operations(types: str) -> set[str]:
    return {
        m["operation"]
        for line in _interface(types, "operations")
        if (m := OPERATION_LINE.match(line))
    }


def test_every_operation_is_generated_without_warnings(
    generated: Generated, document: dict[str, Any]
) -> None:
    assert generated.done.returncode == 0, generated.done.stdout + generated.done.stderr
    assert _unexpected_output(generated) == []
    expected = _operations(document)
    assert len(expected) >= 40, "the document lists the API's operations"
    assert _generated_paths(generated.types) == expected
    assert _generated_operations(generated.types) == {op for _, _, op in expected}


def test_a_warning_would_be_seen(modules: Path, document: dict[str, Any], tmp_path: Path) -> None:
    """The control: a discriminator mapped to a schema that is not an object is one of the
    generator's own warnings; the check above must see it."""
    bad = json.loads(json.dumps(document))
    bad["components"]["schemas"]["Broken"] = {
        "oneOf": [{"$ref": "#/components/schemas/Problem"}],
        "discriminator": {
            "propertyName": "type",
            "mapping": {"odd": "#/components/schemas/TimeZoneName"},
        },
    }
    generated = _generate(modules, bad, tmp_path / "gen")
    assert generated.done.returncode == 0, generated.done.stderr
    said = _unexpected_output(generated)
    assert any("⚠" in line and "Discriminator mapping" in line for line in said), said


def _ts_key(key: str) -> str:
    return key if key.isdigit() else json.dumps(key)


def _schema_name(content: dict[str, Any]) -> str | None:
    ref = content.get("schema", {}).get("$ref", "")
    prefix = "#/components/schemas/"
    return ref.removeprefix(prefix) if ref.startswith(prefix) else None


def _type_checks(document: dict[str, Any]) -> list[str]:
    """One assertion per path and method, per response body and per request body that the
    document gives a named schema."""
    checks = []
    for path, method, operation in sorted(_operations(document)):
        op = f"operations[{json.dumps(operation)}]"
        checks.append(f"paths[{json.dumps(path)}][{json.dumps(method)}], {op}")
        spec = document["paths"][path][method]
        for status, response in spec["responses"].items():
            for media, content in response.get("content", {}).items():
                if name := _schema_name(content):
                    checks.append(
                        f'{op}["responses"][{_ts_key(status)}]["content"][{json.dumps(media)}], '
                        f'components["schemas"][{json.dumps(name)}]'
                    )
        for media, content in spec.get("requestBody", {}).get("content", {}).items():
            if name := _schema_name(content):
                checks.append(
                    f'NonNullable<{op}["requestBody"]>["content"][{json.dumps(media)}], '
                    f'components["schemas"][{json.dumps(name)}]'
                )
    return checks


def test_the_types_compile_and_type_each_body_per_status(
    generated: Generated, document: dict[str, Any], modules: Path
) -> None:
    assert generated.done.returncode == 0, generated.done.stderr
    checks = _type_checks(document)
    problem_checks = [c for c in checks if "application/problem+json" in c]
    conflict = next(c for c in problem_checks if c.endswith('["ConflictProblem"]'))
    assert any(c.endswith('["InvalidInputProblem"]') for c in problem_checks)
    # The control, last: a 409's body is not the plain Problem.
    control = conflict.replace('["ConflictProblem"]', '["Problem"]')
    source = [
        'import type { components, operations, paths } from "./schema";',
        "type Equal<A, B> =",
        "  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;",
        "type Expect<T extends true> = T;",
        *(f"export type Check{i} = Expect<Equal<{c}>>;" for i, c in enumerate(checks)),
        f"export type Control = Expect<Equal<{control}>>;",
    ]
    (generated.where / "check.ts").write_text("\n".join(source) + "\n")
    (generated.where / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "types": [],
                    "target": "es2022",
                    "module": "es2022",
                    "moduleResolution": "bundler",
                },
                "files": ["check.ts"],
            }
        )
    )
    done = subprocess.run(
        [npm.node(), str(modules / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json"],
        cwd=generated.where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = (done.stdout + done.stderr).splitlines()
    # Every check holds; the control, on the last line, is the one error.
    only_the_control = re.compile(
        rf"check\.ts\({len(source)},\d+\): error TS2344: "
        r"Type 'false' does not satisfy the constraint 'true'\."
    )
    assert len(errors) == 1, "\n".join(errors)
    assert only_the_control.fullmatch(errors[0]), errors[0]
    assert done.returncode == 2

// fetch() against this origin with the Bearer key; problem+json errors become ApiError.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export class Api {
  constructor(key, { onUnauthorized } = {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized || (() => {});
  }

  headers(extra = {}) {
    return { Accept: "application/json", Authorization: `Bearer ${this.key}`, ...extra };
  }

  async request(method, path, { body, headers = {}, params } = {}) {
    const url = params ? `${path}?${new URLSearchParams(params)}` : path;
    const init = {
      method,
      headers: this.headers(headers),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, { type: "/problems/network", title: String(err) });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { title: text.slice(0, 200) };
      }
    }
    if (!response.ok) {
      if (response.status === 401) this.onUnauthorized();
      throw new ApiError(response.status, data || { title: response.statusText });
    }
    return { data, etag: response.headers.get("ETag") };
  }

  get(path, params) {
    return this.request("GET", path, { params });
  }

  post(path, body, headers) {
    return this.request("POST", path, { body, headers });
  }

  patch(path, body, headers) {
    return this.request("PATCH", path, { body, headers });
  }

  // Every page of a list (bounded: the page shows at most `max` rows).
  async all(path, params = {}, max = 2000) {
    const items = [];
    let cursor = null;
    do {
      const query = { ...params, limit: "500" };
      if (cursor) query.cursor = cursor;
      const { data } = await this.get(path, query);
      items.push(...data.items);
      cursor = data.next_cursor;
    } while (cursor && items.length < max);
    return items;
  }
}

// A reservation's ETag as If-Match wants it.
export function ifMatch(reservation) {
  return { "If-Match": `"${reservation.version}"` };
}

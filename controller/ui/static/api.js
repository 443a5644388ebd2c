// The API client every page uses (ctx.api): JSON in and out, the CSRF header on writes, a 401
// turns into the login screen, any other failure shows in the error banner (unless quiet).
//
//   await api.get("/api/runs", {project: "p", label: ["a=b", "c=d"]})   -> parsed JSON
//   await api.post(path, body) / api.put / api.patch / api.del
//   await api.request(method, path, {query, body, quiet, signal, raw})   raw: the Response
//   api.url(path, query)                                                 -> "/api/...?..."
//   api.session                                                          {mode, csrf, expires}
//
// A failed call throws ApiError {status, kind, detail, message}.

import { banner } from "./ui.js";

export class ApiError extends Error {
  constructor(status, kind, detail, requestId) {
    super(typeof detail === "string" && detail ? `${kind}: ${detail}` : kind);
    this.status = status;
    this.kind = kind;
    this.detail = detail;
    this.requestId = requestId;
  }
}

let onUnauthorized = () => {};
export const api = {
  session: null,

  setUnauthorizedHandler(fn) {
    onUnauthorized = fn;
  },

  url(path, query) {
    if (!query) return path;
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => qs.append(k, String(x)));
      else qs.append(k, String(v));
    }
    const s = qs.toString();
    return s ? `${path}${path.includes("?") ? "&" : "?"}${s}` : path;
  },

  async request(method, path, { query, body, quiet = false, signal, raw = false } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && method !== "HEAD" && api.session?.csrf) {
      headers["X-CSRF-Token"] = api.session.csrf;
    }
    let payload;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(api.url(path, query), {
        method,
        headers,
        body: payload,
        credentials: "same-origin",
        signal,
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      const e = new ApiError(0, "NetworkError", `${method} ${path}: ${err.message}`);
      if (!quiet) banner(e.message);
      throw e;
    }
    if (resp.status === 401) {
      const e = await toError(resp);
      onUnauthorized(e);
      throw e;
    }
    if (!resp.ok) {
      const e = await toError(resp);
      if (!quiet) banner(`${method} ${path} → ${resp.status} ${e.message}`);
      throw e;
    }
    if (raw) return resp;
    if (resp.status === 204) return null;
    const type = resp.headers.get("Content-Type") || "";
    return type.includes("json") ? resp.json() : resp.text();
  },

  get(path, query, opts = {}) {
    return api.request("GET", path, { ...opts, query });
  },
  post(path, body, opts = {}) {
    return api.request("POST", path, { ...opts, body });
  },
  put(path, body, opts = {}) {
    return api.request("PUT", path, { ...opts, body });
  },
  patch(path, body, opts = {}) {
    return api.request("PATCH", path, { ...opts, body });
  },
  del(path, opts = {}) {
    return api.request("DELETE", path, opts);
  },
};

async function toError(resp) {
  let kind = `HTTP ${resp.status}`;
  let detail = resp.statusText;
  let rid;
  try {
    const body = await resp.json();
    kind = body.error || kind;
    detail = body.detail ?? body.message ?? detail;
    rid = body.request_id;
  } catch {
    // not JSON: keep the status line
  }
  if (detail && typeof detail !== "string") detail = JSON.stringify(detail);
  return new ApiError(resp.status, kind, detail, rid);
}

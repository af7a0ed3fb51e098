// The admin API, called with the operator's token. The token lives in sessionStorage only
// (this tab, until it is closed or "log out"), goes out as `Authorization: Bearer` and never
// as a cookie (`credentials: 'omit'`): no other site can make this browser act with it.
// Paths are relative to the page (`../v1/...` from `/dashboard/`), so a path prefix added by a
// reverse proxy is kept.

const TOKEN_KEY = 'gatehouse.dashboard.token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** A failed call: `status` 0 when no answer came; `problem` the problem+json body, if any. */
export class ApiError extends Error {
  constructor(status, problem, message) {
    super(message);
    this.status = status;
    this.problem = problem;
  }

  /** True when the API is older than the page (the route does not exist there). */
  get missing() {
    return this.status === 404 || this.status === 405;
  }
}

let inflight = 0;

function track(delta) {
  inflight += delta;
  // Read by the browser tests to know when the page is quiet.
  document.body.dataset.inflight = String(inflight);
}

/**
 * Calls `path` (e.g. `v1/enforcement`) with `method` and a JSON `body`; resolves to the parsed
 * answer, rejects with an ApiError that carries the problem document.
 */
export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  const bearer = token.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = {
    method,
    headers,
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
    referrerPolicy: 'no-referrer',
  };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  track(1);
  try {
    let response;
    try {
      response = await fetch(`../${path}`, init);
    } catch (e) {
      throw new ApiError(0, null, `gatehouse did not answer (${e.message})`);
    }
    const type = response.headers.get('Content-Type') || '';
    const parsed = type.includes('json') ? await response.json().catch(() => null) : null;
    if (!response.ok) {
      const problem = parsed && typeof parsed === 'object' ? parsed : null;
      throw new ApiError(response.status, problem, describeProblem(response.status, problem));
    }
    return parsed;
  } finally {
    track(-1);
  }
}

/** `title: detail (HTTP status)` of a problem document. */
function describeProblem(status, problem) {
  if (!problem) return `HTTP ${status}`;
  const title = problem.title || `HTTP ${status}`;
  return problem.detail ? `${title}: ${problem.detail} (HTTP ${status})` : `${title} (HTTP ${status})`;
}

/** The words for a failed call; a route this instance lacks says so. */
export function explain(error) {
  if (error instanceof ApiError && error.missing) {
    return 'not available on this instance (an older gatehouse behind the same address?)';
  }
  return error instanceof Error ? error.message : String(error);
}

/** Builds `path?k=v&...` from the parameters that are set. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && String(value).trim() !== '') {
      query.set(key, String(value).trim());
    }
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

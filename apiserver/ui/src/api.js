// Every request to the API server goes through here, so that the bearer token, the
// decoding of Status errors and the switch to the login form on 401 live in one place.

const TOKEN_KEY = 'capstan.token';

// sessionStorage: the token lives as long as the tab, and is never written to disk
// by a "remember me" the user did not ask for.
export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the session simply won't survive a reload.
  }
}

let unauthorized = () => {};
/** Called once for every 401 seen by a request made with the session's token. */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/** An HTTP error from the API server; `message` is the Status message when there is one. */
export class ApiError extends Error {
  constructor(status, message, reason = '') {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

async function errorFrom(res) {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // The body is gone; the status line is all there is.
  }
  let message = '';
  let reason = '';
  try {
    const status = JSON.parse(text);
    message = status.message || '';
    reason = status.reason || '';
  } catch {
    message = text.trim().slice(0, 500);
  }
  return new ApiError(res.status, message || `${res.status} ${res.statusText}`.trim(), reason);
}

/**
 * fetch() against the API server with the session's token (or `token`, for trying one
 * out before keeping it). Resolves to the Response when it is 2xx, throws ApiError
 * otherwise, and TypeError/AbortError as fetch does.
 */
export async function request(path, { method = 'GET', body, headers = {}, signal, token } = {}) {
  const h = { Accept: 'application/json', ...headers };
  const bearer = token === undefined ? getToken() : token;
  if (bearer) h.Authorization = `Bearer ${bearer}`;
  const res = await fetch(path, { method, headers: h, body, signal, cache: 'no-store' });
  if (!res.ok) {
    const err = await errorFrom(res);
    // A trial token's 401 belongs to the login form, not to the session.
    if (res.status === 401 && token === undefined) unauthorized(err);
    throw err;
  }
  return res;
}

export async function getJSON(path, opts) {
  const res = await request(path, opts);
  return res.json();
}

/** Sends a JSON body; `contentType` lets PATCH say which patch flavour it is. */
export async function sendJSON(method, path, value, contentType = 'application/json') {
  const res = await request(path, {
    method,
    body: JSON.stringify(value),
    headers: { 'Content-Type': contentType },
  });
  return res.json().catch(() => null);
}

/** Reads a streamed body, calling `onChunk` with each piece of decoded text. */
export async function readText(res, onChunk) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const text = decoder.decode(value, { stream: true });
      if (text) onChunk(text);
    }
  } catch (e) {
    // onChunk gave up (or the network did): close the connection rather than leave a
    // half-read stream holding one of the browser's few connections to the server.
    reader.cancel().catch(() => {});
    throw e;
  }
  const rest = decoder.decode();
  if (rest) onChunk(rest);
}

/** Reads a newline-delimited body (a watch), calling `onLine` with each non-empty line. */
export async function readLines(res, onLine) {
  let buf = '';
  await readText(res, (text) => {
    buf += text;
    let start = 0;
    let nl;
    while ((nl = buf.indexOf('\n', start)) >= 0) {
      const line = buf.slice(start, nl);
      start = nl + 1;
      if (line.trim()) onLine(line);
    }
    buf = buf.slice(start);
  });
  if (buf.trim()) onLine(buf);
}

/** Resolves after `ms`, or early when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done);
  });
}

/** The user name the API server knows us by, or '' when it won't say. */
export async function whoAmI() {
  try {
    const review = await sendJSON('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'SelfSubjectReview',
    });
    return review?.status?.userInfo?.username || '';
  } catch {
    return '';
  }
}

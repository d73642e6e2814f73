// The console's connection to ecsd: its session, every ECS operation (through
// /console/api/{Operation}, authorized as the API authorizes the signed-in principal) and the
// event log.

export class ApiError extends Error {
  constructor(type, message, status, body = {}) {
    super(message || type);
    this.type = type;
    this.status = status;
    this.body = body;
  }
}

let session = null;
const expiredListeners = [];

export function current() {
  return session;
}

export function onExpired(listener) {
  expiredListeners.push(listener);
}

async function answer(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = new ApiError(body.__type || `HTTP ${response.status}`, body.message, response.status, body);
    if (err.type === 'MissingAuthenticationTokenException' && session) {
      session = null;
      expiredListeners.forEach((l) => l(err));
    }
    throw err;
  }
  return body;
}

/// The session the browser's cookie names; throws (with `body.developmentSignIn`) if none.
export async function loadSession() {
  session = await answer(await fetch('/console/session', { credentials: 'same-origin' }));
  return session;
}

export async function signIn(form) {
  session = await answer(await fetch('/console/session', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(form),
  }));
  return session;
}

export async function signOut() {
  const token = session?.csrfToken || '';
  session = null;
  await fetch('/console/session', { method: 'DELETE', credentials: 'same-origin', headers: { 'x-ecsd-csrf': token } });
}

/// One ECS operation, as an SDK would call it.
export async function call(operation, input = {}) {
  return answer(await fetch(`/console/api/${operation}`, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/x-amz-json-1.1', 'x-ecsd-csrf': session?.csrfToken || '' },
    body: JSON.stringify(input),
  }));
}

/// Every page of a list operation, concatenated (`key` names the list).
export async function all(operation, input, key, limit = 2000) {
  let out = [];
  let nextToken;
  do {
    const page = await call(operation, nextToken ? { ...input, nextToken } : input);
    out = out.concat(page[key] || []);
    nextToken = page.nextToken;
  } while (nextToken && out.length < limit);
  return out;
}

/// Describes `arns` in batches of `size` (the operations' limits).
export async function describeAll(operation, input, listKey, arns, resultKey, size = 100) {
  let out = [];
  for (let i = 0; i < arns.length; i += size) {
    const page = await call(operation, { ...input, [listKey]: arns.slice(i, i + size) });
    out = out.concat(page[resultKey] || []);
  }
  return out;
}

/// Every event of the log that `params` select (`resource`, `cluster`, `detail-type`).
export async function events(params) {
  let after = 0;
  let out = [];
  for (;;) {
    const query = new URLSearchParams({ ...params, after: String(after), limit: '1000' });
    const page = await answer(await fetch(`/console/events?${query}`, { credentials: 'same-origin' }));
    out = out.concat(page.events.map((e) => e.event));
    if (page.events.length < 1000 || out.length >= 20000) return out;
    after = page.lastSeq;
  }
}

// Signing in and out. The page itself is served without credentials; whether the API
// wants a token is found out by asking it for something small.

import { ApiError, getToken, onUnauthorized, request, setToken, whoAmI } from './api.js';
import { stopAll } from './live.js';
import { changed, resetData, state } from './store.js';

const PROBE = '/api/v1/namespaces?limit=1';

function setAuth(fields) {
  Object.assign(state.auth, fields);
  changed();
}

async function enter(usingToken) {
  setAuth({ phase: 'in', message: '', usingToken, user: '' });
  const user = await whoAmI();
  if (state.auth.phase === 'in') setAuth({ user });
}

function toLogin(message) {
  stopAll();
  resetData();
  setAuth({ phase: 'login', message, user: '', usingToken: false });
}

/**
 * Tries `token` ('' for none) against the API. Resolves 'ok' when the server takes it
 * (a 403 counts: the user is known, just not allowed to list namespaces), 'rejected'
 * on 401, and throws on anything that says nothing about the token (network errors).
 */
async function probe(token) {
  try {
    await request(PROBE, { token });
    return 'ok';
  } catch (e) {
    if (e instanceof ApiError) return e.status === 401 ? 'rejected' : 'ok';
    throw e;
  }
}

/** At startup: straight in when no token is needed (kubectl proxy) or the stored one works. */
export async function start() {
  setAuth({ phase: 'checking', message: '' });
  const token = getToken();
  try {
    if ((await probe(token)) === 'ok') return enter(Boolean(token));
    setToken('');
    toLogin(token ? 'The stored token is no longer accepted; sign in again.' : '');
  } catch (e) {
    setAuth({ phase: 'offline', message: `Cannot reach the API server: ${e.message || e}` });
  }
}

/** The login form's submit: keeps the token only if the server accepts it. */
export async function signIn(token) {
  token = token.trim();
  if (!token) {
    setAuth({ message: 'Paste a bearer token first.' });
    return;
  }
  setAuth({ message: 'Checking…' });
  try {
    if ((await probe(token)) !== 'ok') {
      setAuth({ message: 'The API server rejected this token (401 Unauthorized).' });
      return;
    }
  } catch (e) {
    setAuth({ message: `Cannot reach the API server: ${e.message || e}` });
    return;
  }
  setToken(token);
  await enter(true);
}

export function signOut() {
  setToken('');
  toLogin('Signed out.');
}

// Any 401 later on (token expired or revoked) ends the session, once.
onUnauthorized(() => {
  if (state.auth.phase !== 'in') return;
  setToken('');
  toLogin('The API server no longer accepts your credentials (401); sign in again.');
});

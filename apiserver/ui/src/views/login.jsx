// The login form, shown when the API server answers 401 to the session's requests.

import { signIn } from '../session.js';

export function Login({ message }) {
  // Read from the field at submit time: whatever filled it (typing, a password
  // manager, a test driver), the form sends what is there.
  const submit = (e) => {
    e.preventDefault();
    signIn(e.currentTarget.querySelector('#token').value);
  };
  return (
    <main class="login">
      <form class="card login-card" onSubmit={submit}>
        <h1>Capstan</h1>
        <label for="token">Bearer token</label>
        <input
          id="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
        />
        <button id="login" type="submit" class="primary">
          Sign in with a bearer token
        </button>
        <p class="hint">
          <code>kubectl create token &lt;serviceaccount&gt;</code>, or open the dashboard through{' '}
          <code>kubectl proxy</code>
        </p>
        {message && (
          <p class="login-message" role="status" data-testid="login-message">
            {message}
          </p>
        )}
      </form>
    </main>
  );
}

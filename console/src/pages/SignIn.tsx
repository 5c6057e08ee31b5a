// The sign-in page. The bridge answers a successful Login with an HttpOnly cookie; the
// token in the answer's body is ignored here and never stored.
import { useState } from "preact/hooks";
import { auth, Code, ConnectError } from "../api";
import { t } from "../i18n";
import { me } from "../state";

export function SignIn() {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const res = await auth.login({ username: username.trim(), password });
      me.value = res.user ?? null;
    } catch (err) {
      const code = err instanceof ConnectError ? err.code : Code.Unknown;
      setError(
        code === Code.ResourceExhausted
          ? t().signInThrottled
          : code === Code.Unauthenticated || code === Code.InvalidArgument
            ? t().signInFailed
            : `${t().error}: ${err instanceof ConnectError ? err.rawMessage : String(err)}`,
      );
    } finally {
      setBusy(false);
      setPassword("");
    }
  }

  return (
    <main id="main" class="signin">
      <h1>{t().signIn}</h1>
      <form onSubmit={submit} aria-describedby={error ? "signin-error" : undefined}>
        <label for="username">{t().username}</label>
        <input
          id="username"
          name="username"
          autocomplete="username"
          required
          value={username}
          onInput={(e) => setUsername((e.target as HTMLInputElement).value)}
        />
        <label for="password">{t().password}</label>
        <input
          id="password"
          name="password"
          type="password"
          autocomplete="current-password"
          required
          value={password}
          onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
        />
        {error && (
          <p id="signin-error" class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {t().signIn}
        </button>
      </form>
    </main>
  );
}

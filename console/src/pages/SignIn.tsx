// The sign-in page. POST /auth/sign-in makes the bridge call Login and keep the token in
// an HttpOnly cookie; the page then asks WhoAmI who signed in. No token in page scripts.
import { useState } from "preact/hooks";
import { auth, Code, ConnectError, signIn } from "../api";
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
      await signIn(username.trim(), password);
      me.value = (await auth.whoAmI({})).user ?? null;
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

// Sign-in with an API key (`nexus token create …`), asked for when the server requires auth.
import { useState, type FormEvent } from "react";
import { useSession } from "../session";

export function SignIn() {
  const session = useSession();
  const [key, setKey] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    const ok = await session.signIn(key);
    setBusy(false);
    if (ok) window.location.hash = "#/composer";
  };
  return (
    <section className="signin">
      <h1>Sign in</h1>
      <p>This server requires credentials. Paste an API key (create one with <code>nexus token create</code>).</p>
      <form onSubmit={submit}>
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autoComplete="off"
          value={key}
          onChange={(e) => setKey(e.target.value)}
          placeholder="nxs_…"
          required
        />
        <button type="submit" disabled={busy || !key.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
      {session.error && (
        <p role="alert" className="error">
          {session.error}
        </p>
      )}
    </section>
  );
}

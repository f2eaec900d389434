// Registering the document as a new version: the next patch version is suggested when the name
// exists; the server's warnings and errors are shown verbatim; after success, links to run it and
// to its marketplace page.
import { useEffect, useId, useState } from "react";
import { ConnectError, errorText, isCode, Code, nexus } from "../api";
import { ValidatePatternResponseSchema } from "../gen/nexus/v1/nexus_pb";
import { highestVersion, nextPatch } from "../model/ops";
import type { PatternDoc } from "../model/types";
import { href } from "../router";
import { toDiag, toPattern, type Diag } from "./validate";

type Result =
  | { kind: "ok"; name: string; version: string; created: boolean; diags: Diag[] }
  | { kind: "error"; message: string; diags: Diag[] };

export function RegisterPanel(props: { doc: PatternDoc; setVersion: (v: string) => void; onClose: () => void; onSelectPath: (path: string) => void }) {
  const { doc } = props;
  const name = typeof doc.name === "string" ? doc.name : "";
  const docVersion = typeof doc.version === "string" ? doc.version : "";
  const [version, setVersion] = useState(docVersion || "1.0.0");
  const [existing, setExisting] = useState<string[] | null>(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<Result | null>(null);
  const vid = useId();

  useEffect(() => {
    let live = true;
    setExisting(null);
    if (!name) return;
    nexus.listPatternVersions({ name }).then(
      (r) => {
        if (!live) return;
        const versions = r.versions.map((v) => v.version);
        setExisting(versions);
        const top = highestVersion(versions);
        if (top && (versions.includes(docVersion) || !docVersion)) setVersion(nextPatch(top));
      },
      (err) => {
        if (live) setExisting(isCode(err, Code.NotFound) ? [] : null);
      },
    );
    return () => {
      live = false;
    };
  }, [name, docVersion]);

  const register = async () => {
    setBusy(true);
    setResult(null);
    const withVersion = { ...doc, version };
    if (version !== docVersion) props.setVersion(version);
    const shaped = toPattern(withVersion);
    if ("diag" in shaped) {
      setResult({ kind: "error", message: shaped.diag.message, diags: [shaped.diag] });
      setBusy(false);
      return;
    }
    try {
      const res = await nexus.registerPattern({ pattern: shaped.pattern });
      setResult({
        kind: "ok",
        name: res.patternRef?.name ?? name,
        version: res.patternRef?.version ?? version,
        created: res.created,
        diags: res.diagnostics.map(toDiag),
      });
    } catch (err) {
      const details = err instanceof ConnectError ? err.findDetails(ValidatePatternResponseSchema) : [];
      setResult({ kind: "error", message: errorText(err), diags: details.flatMap((d) => d.diagnostics.map(toDiag)) });
    } finally {
      setBusy(false);
    }
  };

  const taken = existing?.includes(version);
  return (
    <section className="register panel" aria-label="Register">
      <div className="pane-head">
        <h2>Register {name ? <code>{name}</code> : "the pattern"}</h2>
        <button type="button" onClick={props.onClose} aria-label="Close the register panel">
          ×
        </button>
      </div>
      {!name && <p className="error">Give the pattern a name first (Pattern → General → name).</p>}
      {existing && existing.length > 0 && (
        <p className="muted small">
          Registered versions: {existing.join(", ")}. A registered version never changes: register a new one.
        </p>
      )}
      {existing && existing.length === 0 && name && <p className="muted small">No pattern is named {name} yet: this will be its first version.</p>}
      <div className="row-form">
        <label htmlFor={vid}>Version</label>
        <input id={vid} value={version} onChange={(e) => setVersion(e.target.value)} aria-describedby={taken ? `${vid}-taken` : undefined} />
        <button type="button" className="primary" disabled={busy || !name || !version} onClick={() => void register()}>
          {busy ? "Registering…" : `Register version ${version}`}
        </button>
      </div>
      {taken && (
        <p id={`${vid}-taken`} className="warning small">
          {version} exists: registering it again only succeeds if the document is identical.
        </p>
      )}
      {result?.kind === "error" && (
        <div role="alert" className="register-result error">
          <p>{result.message}</p>
          {result.diags.length > 0 && (
            <ul>
              {result.diags.map((d, i) => (
                <li key={i}>
                  <button type="button" className="link" onClick={() => props.onSelectPath(d.path)}>
                    {d.path || "document"}
                  </button>
                  : {d.message}
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
      {result?.kind === "ok" && (
        <div role="status" className="register-result ok">
          <p>
            {result.created ? "Registered" : "Already registered (identical)"} <code>
              {result.name}@{result.version}
            </code>
            .
          </p>
          {result.diags.length > 0 && (
            <ul className="warning">
              {result.diags.map((d, i) => (
                <li key={i}>
                  {d.severity}: {d.path ? `${d.path}: ` : ""}
                  {d.message}
                </li>
              ))}
            </ul>
          )}
          <p className="links">
            <a href={`${href("run", result.name)}?version=${encodeURIComponent(result.version)}`}>Run {result.name}</a>
            <a href={href("marketplace", result.name)}>Open in marketplace</a>
          </p>
        </div>
      )}
    </section>
  );
}

// Executions: the list (`#/executions?pattern=NAME&status=S`), one execution's live timeline
// (`#/executions/ID`) and the run form (`#/run/NAME?version=V`).
//
// Running uses ExecutePatternStream, held outside React (components/executionFeed.ts): the server
// cancels an execution whose stream caller goes away, so the stream lives as long as the execution
// whatever page the user moves to; the run page goes to the execution's timeline as soon as it
// has started, and that timeline reads the same stream from its first event.
import type { JsonObject } from "@bufbuild/protobuf";
import { useCallback, useEffect, useId, useState, useSyncExternalStore, type FormEvent } from "react";
import { errorText, nexus } from "../api";
import { followExecution, ownRun, startRun, type Feed, type FeedState } from "../components/executionFeed";
import { RunForm } from "../components/RunForm";
import { StatusBadge, Timeline } from "../components/Timeline";
import { durMs, emptyView, formatDuration, formatTime, isFinal, tsMs } from "../components/timelineModel";
import { ExecutionStatus, type Execution, type Pattern, type PatternVersion } from "../gen/nexus/v1/nexus_pb";
import { href, navigate, type Route } from "../router";
import { useSession } from "../session";
import "./executions.css";

export default function Executions({ route }: { route: Route }) {
  if (route.page === "run") {
    const name = route.rest[0];
    if (!name) return <p role="alert">Name the pattern to run: #/run/NAME.</p>;
    return <RunPage key={`${name}@${route.query.get("version") ?? ""}`} name={name} version={route.query.get("version") ?? ""} />;
  }
  if (route.rest[0]) return <ExecutionPage key={route.rest[0]} id={route.rest[0]} />;
  return <ExecutionList query={route.query} />;
}

// ---------------------------------------------------------------------------------------------
// Run.

const DRAFT_KEY = (name: string) => `nexus.runInput.${name}`;

function rememberedInput(name: string): JsonObject | undefined {
  try {
    const text = sessionStorage.getItem(DRAFT_KEY(name));
    const v = text ? (JSON.parse(text) as unknown) : undefined;
    return v && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : undefined;
  } catch {
    return undefined;
  }
}

function runRefusal(roles: string[]): string {
  return `Your key (${roles.join(", ") || "no role"}) may not run patterns: running needs the runner or admin role.`;
}

function RunPage({ name, version }: { name: string; version: string }) {
  const session = useSession();
  const [pattern, setPattern] = useState<Pattern | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [versions, setVersions] = useState<PatternVersion[]>([]);
  const [latest, setLatest] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [key, setKey] = useState("");
  const ids = useId();

  useEffect(() => {
    let live = true;
    nexus
      .getPattern({ name, version })
      .then((p) => live && setPattern(p))
      .catch((err) => live && setLoadError(errorText(err)));
    nexus
      .listPatternVersions({ name })
      .then((r) => {
        if (!live) return;
        setVersions(r.versions);
        setLatest(r.latest);
      })
      .catch(() => {});
    return () => {
      live = false;
    };
  }, [name, version]);

  const run = async (input: JsonObject) => {
    if (!pattern) return;
    setBusy(true);
    setError(null);
    try {
      const id = await startRun({ patternName: pattern.name, version: pattern.version, input, idempotencyKey: key.trim() });
      navigate(href("executions", id));
    } catch (err) {
      setError(errorText(err));
      setBusy(false);
    }
  };

  if (loadError) {
    return (
      <section className="run-page">
        <h1>Run {name}</h1>
        <p role="alert" className="error">
          {loadError}
        </p>
        <p>
          <a href={href("marketplace")}>Browse the marketplace</a>
        </p>
      </section>
    );
  }
  if (!pattern) return <p className="muted">Loading {name}…</p>;
  const canRun = session.can("run");
  const p = session.principal;
  return (
    <section className="run-page">
      <header className="run-head">
        <h1>
          Run <span className="run-name">{pattern.name}</span>
        </h1>
        <div className="run-meta">
          <label htmlFor={`${ids}-version`}>Version</label>
          <select
            id={`${ids}-version`}
            value={version || ""}
            onChange={(e) => navigate(`${href("run", name)}${e.target.value ? `?version=${encodeURIComponent(e.target.value)}` : ""}`)}
          >
            <option value="">latest{latest ? ` (${latest})` : ""}</option>
            {[...versions].reverse().map((v) => (
              <option key={v.version} value={v.version}>
                {v.version}
                {v.deprecated ? " (deprecated)" : ""}
              </option>
            ))}
          </select>
          <a href={href("marketplace", pattern.name)}>Details in the marketplace</a>
          <a href={`${href("executions")}?pattern=${encodeURIComponent(pattern.name)}`}>Past executions</a>
        </div>
        {pattern.description && <p>{pattern.description}</p>}
        <p className="muted">
          {pattern.name}@{pattern.version} · {pattern.durability || "ephemeral"}
          {pattern.timeout && ` · timeout ${formatDuration(durMs(pattern.timeout))}`} · {pattern.steps.length} step
          {pattern.steps.length === 1 ? "" : "s"}
          {pattern.deprecated && <strong className="warning"> · this version is deprecated</strong>}
        </p>
      </header>
      <div className="run-body panel">
        <h2>Input</h2>
        <RunForm
          key={pattern.version}
          schema={pattern.input}
          initial={rememberedInput(pattern.name)}
          busy={busy}
          submitLabel={`Run ${pattern.name}@${pattern.version}`}
          disabledReason={canRun ? undefined : runRefusal(p?.roles ?? [])}
          onSubmit={run}
          onInputChange={(input) => {
            try {
              sessionStorage.setItem(DRAFT_KEY(pattern.name), JSON.stringify(input));
            } catch {
              /* storage full or disabled: nothing to remember */
            }
          }}
        >
          <details className="run-advanced">
            <summary>Advanced</summary>
            <div className="rf-field">
              <label htmlFor={`${ids}-key`} className="rf-label">
                Idempotency key
              </label>
              <input id={`${ids}-key`} value={key} onChange={(e) => setKey(e.target.value)} aria-describedby={`${ids}-key-help`} />
              <p className="rf-help" id={`${ids}-key-help`}>
                Optional: running again with the same key returns the first execution instead of starting another.
              </p>
            </div>
          </details>
        </RunForm>
        {error && (
          <p role="alert" className="error run-error">
            {error}
          </p>
        )}
        <p className="muted run-note">
          The execution streams its events to this tab and keeps running while you move around the app; closing or reloading
          the tab cancels it (the server cancels an execution whose caller goes away), so the browser asks first.
        </p>
      </div>
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// One execution.

const noSubscribe = () => () => {};

function useFeed(id: string): FeedState | null {
  const [feed, setFeed] = useState<Feed | null>(null);
  useEffect(() => {
    const own = ownRun(id);
    if (own) {
      setFeed(own);
      return;
    }
    const f = followExecution(id);
    setFeed(f);
    return () => f.stop();
  }, [id]);
  const get = useCallback(() => (feed ? feed.getState() : null), [feed]);
  return useSyncExternalStore(feed ? feed.subscribe : noSubscribe, get);
}

function CancelControl({ id, running, parked }: { id: string; running: boolean; parked: boolean }) {
  const session = useSession();
  const ids = useId();
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [result, setResult] = useState<string | null>(null);
  const canRun = session.can("run");

  const cancel = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await nexus.cancelExecution({ executionId: id, reason: reason.trim() });
      setResult(r.cancelled ? "Cancellation requested: in-flight calls stop, completed steps are compensated." : "It had already finished.");
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  if (!running && !error) return result ? <p className="muted" role="status">{result}</p> : null;
  return (
    <div className="tl-cancel">
      {parked && running && (
        <p className="muted">Parked until an event resumes it or its wait times out; cancelling ends it now (compensating what it did).</p>
      )}
      {running && (
        <form onSubmit={cancel} aria-label="Cancel the execution">
          <label htmlFor={`${ids}-reason`}>Reason</label>
          <input
            id={`${ids}-reason`}
            value={reason}
            onChange={(e) => setReason(e.target.value)}
            placeholder="optional"
            disabled={!canRun}
          />
          <button type="submit" disabled={!canRun || busy} aria-describedby={canRun ? undefined : `${ids}-why`}>
            {busy ? "Cancelling…" : "Cancel execution"}
          </button>
          {!canRun && (
            <span className="muted" id={`${ids}-why`}>
              Your key may not cancel executions (runner or admin role needed).
            </span>
          )}
        </form>
      )}
      {result && running && (
        <p className="muted" role="status">
          {result}
        </p>
      )}
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
    </div>
  );
}

function ExecutionPage({ id }: { id: string }) {
  const state = useFeed(id);
  const view = state?.view ?? emptyView(id);
  const running = !!state && !state.error && !isFinal(view.status) && state.connection !== "done";
  return (
    <section className="execution-page">
      <nav className="crumbs" aria-label="Breadcrumb">
        <a href={href("executions")}>Executions</a>
        {view.patternName && (
          <>
            {" / "}
            <a href={`${href("executions")}?pattern=${encodeURIComponent(view.patternName)}`}>{view.patternName}</a>
            {" · "}
            <a href={`${href("run", view.patternName)}?version=${encodeURIComponent(view.patternVersion)}`}>Run again</a>
          </>
        )}
      </nav>
      {state?.error ? (
        <>
          <h1>
            Execution <code>{id}</code>
          </h1>
          <p role="alert" className="error">
            {state.error}
          </p>
        </>
      ) : (
        <Timeline
          state={state ?? { view, connection: "connecting", ownStream: false }}
          actions={<CancelControl id={id} running={running} parked={state?.connection === "polling"} />}
        />
      )}
    </section>
  );
}

// ---------------------------------------------------------------------------------------------
// The list.

const PAGE_SIZE = 50;
const STATUSES = [
  ExecutionStatus.RUNNING,
  ExecutionStatus.SUCCEEDED,
  ExecutionStatus.FAILED,
  ExecutionStatus.CANCELLED,
  ExecutionStatus.COMPENSATED,
  ExecutionStatus.PENDING,
];

function parseStatus(s: string | null): ExecutionStatus {
  if (!s) return ExecutionStatus.UNSPECIFIED;
  const v = ExecutionStatus[s.toUpperCase().replace(/^EXECUTION_STATUS_/, "") as keyof typeof ExecutionStatus];
  return typeof v === "number" ? v : ExecutionStatus.UNSPECIFIED;
}

function listHref(pattern: string, status: ExecutionStatus): string {
  const q = new URLSearchParams();
  if (pattern) q.set("pattern", pattern);
  if (status !== ExecutionStatus.UNSPECIFIED) q.set("status", ExecutionStatus[status]);
  const s = q.toString();
  return `${href("executions")}${s ? `?${s}` : ""}`;
}

function ExecutionList({ query }: { query: URLSearchParams }) {
  const pattern = query.get("pattern") ?? "";
  const status = parseStatus(query.get("status"));
  const ids = useId();
  const [patternText, setPatternText] = useState(pattern);
  const [tick, setTick] = useState(0);
  const [auto, setAuto] = useState(false);
  const [names, setNames] = useState<string[]>([]);
  const [toRun, setToRun] = useState("");

  useEffect(() => setPatternText(pattern), [pattern]);
  useEffect(() => {
    if (!auto) return;
    const t = setInterval(() => setTick((n) => n + 1), 5000);
    return () => clearInterval(t);
  }, [auto]);
  useEffect(() => {
    nexus
      .listPatterns({ pageSize: 200 })
      .then((r) => setNames(r.patterns.map((p) => p.name)))
      .catch(() => {});
  }, []);

  const apply = (e: FormEvent) => {
    e.preventDefault();
    navigate(listHref(patternText.trim(), status));
  };
  const filtered = pattern !== "" || status !== ExecutionStatus.UNSPECIFIED;

  return (
    <section className="executions-page">
      <div className="ex-head">
        <h1>Executions</h1>
        <form
          className="ex-run"
          onSubmit={(e) => {
            e.preventDefault();
            if (toRun) navigate(href("run", toRun));
          }}
        >
          <label htmlFor={`${ids}-run`}>Run a pattern</label>
          <select id={`${ids}-run`} value={toRun} onChange={(e) => setToRun(e.target.value)}>
            <option value="">Choose…</option>
            {names.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
          <button type="submit" disabled={!toRun}>
            Open run form
          </button>
        </form>
      </div>

      <form className="ex-filters" onSubmit={apply} role="search" aria-label="Filter executions">
        <label htmlFor={`${ids}-pattern`}>Pattern</label>
        <input
          id={`${ids}-pattern`}
          list={`${ids}-names`}
          value={patternText}
          onChange={(e) => setPatternText(e.target.value)}
          placeholder="any pattern"
        />
        <datalist id={`${ids}-names`}>
          {names.map((n) => (
            <option key={n} value={n} />
          ))}
        </datalist>
        <label htmlFor={`${ids}-status`}>Status</label>
        <select id={`${ids}-status`} value={String(status)} onChange={(e) => navigate(listHref(patternText.trim(), Number(e.target.value)))}>
          <option value={String(ExecutionStatus.UNSPECIFIED)}>any status</option>
          {STATUSES.map((s) => (
            <option key={s} value={String(s)}>
              {ExecutionStatus[s]}
            </option>
          ))}
        </select>
        <button type="submit">Filter</button>
        {filtered && <a href={href("executions")}>Clear filters</a>}
        <span className="ex-spacer" />
        <label className="ex-auto">
          <input type="checkbox" checked={auto} onChange={(e) => setAuto(e.target.checked)} /> Auto-refresh
        </label>
        <button type="button" onClick={() => setTick((n) => n + 1)}>
          Refresh
        </button>
      </form>
      <ExecutionTable key={`${pattern}|${status}`} pattern={pattern} status={status} tick={tick} />
    </section>
  );
}

/** One filter's pages (a new filter starts from the first page). */
function ExecutionTable({ pattern, status, tick }: { pattern: string; status: ExecutionStatus; tick: number }) {
  const [tokens, setTokens] = useState<string[]>([""]);
  const [page, setPage] = useState(0);
  const [rows, setRows] = useState<Execution[] | null>(null);
  const [next, setNext] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [loadedAt, setLoadedAt] = useState<number | null>(null);
  const filtered = pattern !== "" || status !== ExecutionStatus.UNSPECIFIED;

  useEffect(() => {
    const ac = new AbortController();
    setLoading(true);
    nexus
      .listExecutions({ patternName: pattern, status, pageSize: PAGE_SIZE, pageToken: tokens[page] ?? "" }, { signal: ac.signal })
      .then((r) => {
        setRows(r.executions);
        setNext(r.nextPageToken);
        setError(null);
        setLoadedAt(Date.now());
      })
      .catch((err) => {
        if (!ac.signal.aborted) setError(errorText(err));
      })
      .finally(() => {
        if (!ac.signal.aborted) setLoading(false);
      });
    return () => ac.abort();
  }, [pattern, status, page, tokens, tick]);

  return (
    <>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {rows === null && !error && <p className="muted">Loading…</p>}
      {rows !== null && rows.length === 0 && (
        <p className="muted ex-empty">
          {filtered ? "No execution matches these filters." : "No execution yet."} Executions are listed once they finish
          (durable ones as soon as they start); ephemeral ones are kept in memory until the server restarts.
        </p>
      )}
      {rows !== null && rows.length > 0 && (
        <table className="ex-table" aria-busy={loading || undefined}>
          <caption className="sr-only">
            Executions{pattern && ` of ${pattern}`}
            {status !== ExecutionStatus.UNSPECIFIED && `, ${ExecutionStatus[status]}`}, newest first
          </caption>
          <thead>
            <tr>
              <th scope="col">Execution</th>
              <th scope="col">Pattern</th>
              <th scope="col">Status</th>
              <th scope="col">Started</th>
              <th scope="col">Duration</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((e) => (
              <tr key={e.id}>
                <td>
                  <a href={href("executions", e.id)} className="ex-id">
                    {e.id}
                  </a>
                </td>
                <td>
                  <a href={listHref(e.patternName, status)} title={`Executions of ${e.patternName}`}>
                    {e.patternName}
                  </a>
                  <span className="muted">@{e.patternVersion}</span>
                </td>
                <td>
                  <StatusBadge status={e.status} />
                  {e.error?.code && <span className="ex-code"> {e.error.code}</span>}
                </td>
                <td>{formatTime(tsMs(e.startedAt))}</td>
                <td>{formatDuration(durMs(e.duration))}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <nav className="ex-pager" aria-label="Pages">
        <button type="button" disabled={page === 0 || loading} onClick={() => setPage((p) => Math.max(0, p - 1))}>
          Newer
        </button>
        <span className="muted">
          Page {page + 1}
          {loadedAt && ` · updated ${formatTime(loadedAt).slice(11)}`}
          {loading && " · loading…"}
        </span>
        <button
          type="button"
          disabled={!next || loading}
          onClick={() => {
            setTokens((t) => [...t.slice(0, page + 1), next]);
            setPage((p) => p + 1);
          }}
        >
          Older
        </button>
      </nav>
    </>
  );
}

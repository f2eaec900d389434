// The timeline of one execution (Temporal-UI-like): a header (pattern, status, start, duration),
// every step on a shared time axis with its attempts, retries and compensation, expandable
// details (request, response, error, for_each items), the forwarded stream messages as they
// arrive, and the input and output. Renders a `FeedState`; knows nothing about where it comes from.
import type { JsonValue } from "@bufbuild/protobuf";
import { memo, useEffect, useLayoutEffect, useRef, useState, type ReactNode } from "react";
import { ExecutionStatus, StepStatus } from "../gen/nexus/v1/nexus_pb";
import { href } from "../router";
import type { FeedState } from "./executionFeed";
import {
  formatDuration,
  formatTime,
  isFinal,
  MAX_MESSAGES,
  statusName,
  type AttemptView,
  type ExecView,
  type MessageView,
  type StepView,
} from "./timelineModel";

/** A clock that ticks every `every` ms while `every` is not null. */
function useNow(every: number | null): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (every === null) return;
    setNow(Date.now());
    const t = setInterval(() => setNow(Date.now()), every);
    return () => clearInterval(t);
  }, [every]);
  return now;
}

export function StatusBadge({ status, kind = "execution" }: { status: ExecutionStatus | StepStatus; kind?: "execution" | "step" }) {
  const name = statusName(status, kind);
  return <span className={`status status-${name.toLowerCase()}`}>{name}</span>;
}

const JSON_LIMIT = 100_000;

/** Expandable, focusable JSON (re-rendered only when its value changes). */
export const JsonBlock = memo(function JsonBlock({ label, value, open = false }: { label: string; value: JsonValue | undefined; open?: boolean }) {
  const [all, setAll] = useState(false);
  if (value === undefined) {
    return (
      <div className="json-block">
        <span className="json-label">{label}</span> <span className="muted">none</span>
      </div>
    );
  }
  const text = JSON.stringify(value, null, 2);
  const cut = !all && text.length > JSON_LIMIT;
  return (
    <details className="json-block" open={open}>
      <summary>{label}</summary>
      <pre tabIndex={0} aria-label={label}>
        {cut ? text.slice(0, JSON_LIMIT) : text}
      </pre>
      {cut && (
        <button type="button" onClick={() => setAll(true)}>
          Show all ({Math.round(text.length / 1024)} KB)
        </button>
      )}
    </details>
  );
});

/** One forwarded message (the same object across snapshots, so rows already shown are not redone). */
const MessageRow = memo(function MessageRow({ m }: { m: MessageView }) {
  return (
    <li>
      <span className="muted">
        #{m.index} {m.stepId}
      </span>{" "}
      <code>{JSON.stringify(m.message ?? {})}</code>
    </li>
  );
});

interface Axis {
  t0: number;
  span: number;
}

function pct(axis: Axis, ms: number): number {
  return Math.max(0, Math.min(100, ((ms - axis.t0) / axis.span) * 100));
}

function Bar({ axis, start, duration, className, title }: { axis: Axis; start?: number; duration?: number; className: string; title: string }) {
  if (start === undefined) return null;
  const left = pct(axis, start);
  const right = pct(axis, start + (duration ?? 0));
  return <div className={`tl-bar ${className}`} style={{ left: `${left}%`, width: `max(3px, ${right - left}%)` }} title={title} />;
}

function attemptClass(a: AttemptView): string {
  if (!a.code) return "tl-running";
  return a.code === "OK" ? "tl-ok" : "tl-failed";
}

function stepDuration(s: StepView, now: number): number | undefined {
  if (s.durationMs !== undefined) return s.durationMs;
  if (s.status === StepStatus.RUNNING && s.startMs !== undefined) return Math.max(0, now - s.startMs);
  return undefined;
}

function StepBars({ step, axis, now }: { step: StepView; axis: Axis; now: number }) {
  const dur = stepDuration(step, now);
  const attempts = step.attempts.filter((a) => a.startMs !== undefined);
  const rel = (ms: number | undefined) => (ms === undefined ? "" : `+${formatDuration(ms - axis.t0)}`);
  return (
    <div className="tl-track" aria-hidden="true">
      {attempts.length > 1 || (attempts.length === 1 && attempts[0].durationMs !== undefined)
        ? attempts.map((a) => (
            <Bar
              key={a.attempt}
              axis={axis}
              start={a.startMs}
              duration={a.durationMs ?? (a.code ? 0 : Math.max(0, now - (a.startMs ?? now)))}
              className={attemptClass(a)}
              title={`attempt ${a.attempt} ${rel(a.startMs)}: ${a.code || "running"} ${formatDuration(a.durationMs)}`}
            />
          ))
        : (
            <Bar
              axis={axis}
              start={step.startMs}
              duration={dur}
              className={
                step.status === StepStatus.SUCCEEDED ? "tl-ok" : step.status === StepStatus.FAILED ? "tl-failed" : step.status === StepStatus.RUNNING ? "tl-running" : "tl-other"
              }
              title={`${step.id} ${rel(step.startMs)}: ${formatDuration(dur)}`}
            />
          )}
      {step.compensation && (
        <Bar
          axis={axis}
          start={step.compensation.startMs}
          duration={step.compensation.durationMs}
          className="tl-compensation"
          title={`compensation ${rel(step.compensation.startMs)}: ${formatDuration(step.compensation.durationMs)}`}
        />
      )}
    </div>
  );
}

function StepDetails({ step, axis }: { step: StepView; axis: Axis }) {
  return (
    <div className="tl-details">
      <dl className="tl-facts">
        <dt>Call</dt>
        <dd>
          <code>{step.call || "—"}</code>
        </dd>
        <dt>Started</dt>
        <dd>
          {formatTime(step.startMs)}
          {step.startMs !== undefined && <span className="muted"> (+{formatDuration(step.startMs - axis.t0)})</span>}
        </dd>
        {(step.forEach || step.items > 0) && (
          <>
            <dt>for_each</dt>
            <dd>
              {step.items} item{step.items === 1 ? "" : "s"}
              {step.forEach && (
                <>
                  {" "}
                  over <code>{step.forEach}</code>
                </>
              )}
            </dd>
          </>
        )}
        {step.stream && (
          <>
            <dt>Stream</dt>
            <dd>{step.messages.toLocaleString()} messages forwarded</dd>
          </>
        )}
      </dl>
      {step.error && (
        <p className="tl-error">
          <strong>{step.error.code}</strong> {step.error.message}
        </p>
      )}
      {step.attempts.length > 0 && (
        <table className="tl-attempts">
          <caption>Attempts of {step.id}</caption>
          <thead>
            <tr>
              <th scope="col">Attempt</th>
              <th scope="col">Started</th>
              <th scope="col">Duration</th>
              <th scope="col">Code</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {step.attempts.map((a) => (
              <tr key={a.attempt}>
                <td>{a.attempt}</td>
                <td>{a.startMs === undefined ? "—" : `+${formatDuration(a.startMs - axis.t0)}`}</td>
                <td>{formatDuration(a.durationMs)}</td>
                <td className={a.code && a.code !== "OK" ? "error" : undefined}>{a.code || "running"}</td>
                <td>{a.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {step.compensation && (
        <div className="tl-compensation-info">
          <h4>Compensation</h4>
          <p>
            <code>{step.compensation.call || "compensating call"}</code> <StatusBadge status={step.compensation.status} kind="step" />{" "}
            {formatDuration(step.compensation.durationMs)}
            {step.compensation.error && (
              <span className="error">
                {" "}
                {step.compensation.error.code}: {step.compensation.error.message}
              </span>
            )}
          </p>
        </div>
      )}
      <JsonBlock label={`Request of ${step.id}`} value={step.request} />
      <JsonBlock label={`Response of ${step.id}`} value={step.response} />
    </div>
  );
}

function retriesOf(s: StepView): number {
  return Math.max(0, s.attempts.length - 1);
}

function StepRows({ step, axis, now, expanded, toggle }: { step: StepView; axis: Axis; now: number; expanded: boolean; toggle: () => void }) {
  const retries = retriesOf(step);
  const detailsId = `tl-step-${step.id}`;
  return (
    <>
      <tr className={`tl-row tl-row-${statusName(step.status, "step").toLowerCase()}`} data-step={step.id}>
        <th scope="row">
          <button type="button" className="tl-toggle" aria-expanded={expanded} aria-controls={detailsId} onClick={toggle}>
            <span aria-hidden="true">{expanded ? "▾" : "▸"}</span> {step.id}
          </button>
          <div className="tl-call muted">{step.call}</div>
        </th>
        <td>
          <StatusBadge status={step.status} kind="step" />
          {step.compensation && (
            <span className={`status status-compensated`} title="compensated">
              compensated
            </span>
          )}
        </td>
        <td>
          {step.attempts.length || "—"}
          {retries > 0 && <span className="tl-retries"> ({retries} {retries === 1 ? "retry" : "retries"})</span>}
          {step.items > 0 && <span className="muted"> · {step.items} items</span>}
        </td>
        <td className="tl-duration">{formatDuration(stepDuration(step, now))}</td>
        <td className="tl-axis-cell">
          <StepBars step={step} axis={axis} now={now} />
        </td>
      </tr>
      {expanded && (
        <tr className="tl-details-row" id={detailsId}>
          <td colSpan={5}>
            <StepDetails step={step} axis={axis} />
          </td>
        </tr>
      )}
    </>
  );
}

function Messages({ view }: { view: ExecView }) {
  const box = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  useLayoutEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [view.messageCount]);
  if (view.messageCount === 0 && !view.steps.some((s) => s.stream)) return null;
  const shown = view.messages;
  return (
    <section className="tl-messages" aria-labelledby="tl-messages-h">
      <h2 id="tl-messages-h">
        Stream messages{" "}
        <span className="muted" data-testid="message-count">
          {view.messageCount.toLocaleString()} received
          {view.messageCount > shown.length && ` · showing the last ${shown.length.toLocaleString()}`}
        </span>
      </h2>
      {view.messageCount === 0 ? (
        <p className="muted">None yet: they appear here as the stream forwards them.</p>
      ) : (
        <div
          ref={box}
          className="tl-message-list"
          role="log"
          aria-label="Stream messages"
          tabIndex={0}
          onScroll={(e) => {
            const el = e.currentTarget;
            stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
          }}
        >
          <ol>
            {shown.map((m) => (
              <MessageRow key={m.seq} m={m} />
            ))}
          </ol>
        </div>
      )}
      {view.messageCount > MAX_MESSAGES && <p className="muted">Older messages are not kept in the page (the last {MAX_MESSAGES.toLocaleString()} are).</p>}
    </section>
  );
}

function connectionText(state: FeedState): string {
  switch (state.connection) {
    case "connecting":
      return "Connecting…";
    case "live":
      return state.ownStream ? "Live (started here)" : "Live";
    case "reconnecting":
      return "Reconnecting…";
    case "polling":
      return "Waiting (parked): checked every few seconds";
    case "done":
      return "";
  }
}

export function Timeline({ state, actions }: { state: FeedState; actions?: ReactNode }) {
  const v = state.view;
  const running = !isFinal(v.status);
  const clientNow = useNow(running && state.connection !== "done" ? 250 : null);
  const now = clientNow - (v.skewMs ?? 0);
  const [open, setOpen] = useState<Set<string>>(() => new Set());

  const starts = v.steps.flatMap((s) => [s.startMs, s.compensation?.startMs]).filter((x): x is number => x !== undefined);
  const t0 = v.startMs ?? (starts.length ? Math.min(...starts) : now);
  let tEnd = v.startMs !== undefined && v.durationMs !== undefined ? v.startMs + v.durationMs : t0;
  for (const s of v.steps) {
    const d = stepDuration(s, now);
    if (s.startMs !== undefined) tEnd = Math.max(tEnd, s.startMs + (d ?? 0));
    if (s.compensation?.startMs !== undefined) tEnd = Math.max(tEnd, s.compensation.startMs + (s.compensation.durationMs ?? 0));
  }
  if (running && state.connection !== "done") tEnd = Math.max(tEnd, now);
  const axis: Axis = { t0, span: Math.max(1, tEnd - t0) };
  const duration = v.durationMs ?? (running && v.startMs !== undefined ? Math.max(0, now - v.startMs) : undefined);
  const conn = connectionText(state);
  const allOpen = v.steps.length > 0 && v.steps.every((s) => open.has(s.id));

  return (
    <div className="timeline">
      <header className="tl-header">
        <h1>
          Execution <code data-testid="execution-id">{v.id}</code>
        </h1>
        <dl className="tl-summary">
          <div>
            <dt>Pattern</dt>
            <dd>
              {v.patternName ? (
                <a href={href("marketplace", v.patternName)}>
                  {v.patternName}@{v.patternVersion || "latest"}
                </a>
              ) : (
                <span className="muted">unknown yet</span>
              )}
            </dd>
          </div>
          <div>
            <dt>Status</dt>
            <dd data-testid="execution-status">
              <StatusBadge status={v.status} />
            </dd>
          </div>
          <div>
            <dt>Started</dt>
            <dd>{formatTime(v.startMs)}</dd>
          </div>
          <div>
            <dt>Duration</dt>
            <dd data-testid="execution-duration">{formatDuration(duration)}</dd>
          </div>
          {v.idempotencyKey && (
            <div>
              <dt>Idempotency key</dt>
              <dd>
                <code>{v.idempotencyKey}</code>
              </dd>
            </div>
          )}
        </dl>
        {conn && (
          <p className={`tl-connection tl-connection-${state.connection}`} role="status">
            <span className="tl-dot" aria-hidden="true" /> {conn}
          </p>
        )}
        {actions}
      </header>
      {state.notice && <p className="warning">{state.notice}</p>}
      {v.joinedLate && !v.recorded && (
        <p className="muted">
          Joined while it runs: steps that started before are not known yet; the full record appears when it finishes.
        </p>
      )}
      {v.error && (
        <div className="tl-error" data-testid="execution-error">
          <strong>{v.error.code}</strong>
          {v.error.stepId && (
            <>
              {" "}
              in step <code>{v.error.stepId}</code>
            </>
          )}
          : {v.error.message}
        </div>
      )}

      <section aria-labelledby="tl-steps-h" className="tl-steps-section">
        <div className="tl-steps-head">
          <h2 id="tl-steps-h">Steps</h2>
          {v.steps.length > 0 && (
            <button type="button" onClick={() => setOpen(allOpen ? new Set() : new Set(v.steps.map((s) => s.id)))}>
              {allOpen ? "Collapse all" : "Expand all"}
            </button>
          )}
        </div>
        {v.steps.length === 0 ? (
          <p className="muted">{running ? "No step has started yet." : "This execution ran no step."}</p>
        ) : (
          <table className="tl-steps">
            <thead>
              <tr>
                <th scope="col">Step</th>
                <th scope="col">Status</th>
                <th scope="col">Attempts</th>
                <th scope="col">Duration</th>
                <th scope="col" className="tl-axis-cell">
                  <span className="sr-only">Time, 0 to {formatDuration(axis.span)}</span>
                  <div className="tl-axis" aria-hidden="true">
                    {[0, 0.25, 0.5, 0.75, 1].map((f) => (
                      <span key={f} style={{ left: `${f * 100}%` }}>
                        {f === 0 ? "0" : formatDuration(f * axis.span)}
                      </span>
                    ))}
                  </div>
                </th>
              </tr>
            </thead>
            <tbody>
              {v.steps.map((s) => (
                <StepRows
                  key={s.id}
                  step={s}
                  axis={axis}
                  now={now}
                  expanded={open.has(s.id)}
                  toggle={() =>
                    setOpen((o) => {
                      const n = new Set(o);
                      if (n.has(s.id)) n.delete(s.id);
                      else n.add(s.id);
                      return n;
                    })
                  }
                />
              ))}
            </tbody>
          </table>
        )}
        <p className="tl-legend muted" aria-hidden="true">
          <span className="tl-key tl-ok" /> succeeded attempt <span className="tl-key tl-failed" /> failed attempt{" "}
          <span className="tl-key tl-running" /> running <span className="tl-key tl-compensation" /> compensation
        </p>
      </section>

      <Messages view={v} />

      <section aria-labelledby="tl-io-h" className="tl-io">
        <h2 id="tl-io-h">Input and output</h2>
        <div className="tl-io-grid">
          <JsonBlock label="Input" value={v.input} open />
          <JsonBlock label="Output" value={v.output} open />
        </div>
      </section>
    </div>
  );
}

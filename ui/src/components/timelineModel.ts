// What the execution timeline shows, built from either a recorded `Execution` (GetExecution) or
// the live `ExecutionEvent`s of ExecutePatternStream / WatchExecution, and the pattern's plan (its
// steps, so steps that have not started yet are listed as pending). Plain data, mutated in place
// by `applyEvent` and copied by `snapshot` for React: thousands of stream messages a second must
// not cost an array copy each.
import type { JsonObject } from "@bufbuild/protobuf";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import {
  ExecutionStatus,
  StepStatus,
  type Execution,
  type ExecutionError,
  type ExecutionEvent,
  type Pattern,
} from "../gen/nexus/v1/nexus_pb";

/** Forwarded stream messages kept in memory (the oldest are dropped; the count stays exact). */
export const MAX_MESSAGES = 1000;

export interface ErrorView {
  code: string;
  message: string;
  stepId: string;
}

export interface AttemptView {
  attempt: number;
  startMs?: number;
  durationMs?: number;
  /** OK or the gRPC code name of the failure; empty while it runs. */
  code: string;
  message: string;
}

export interface CompensationView {
  call: string;
  status: StepStatus;
  startMs?: number;
  durationMs?: number;
  error?: ErrorView;
}

export interface StepView {
  id: string;
  /** `package.Service/Method`, `emit TYPE`, `wait_for TYPE` or empty when unknown. */
  call: string;
  status: StepStatus;
  startMs?: number;
  durationMs?: number;
  attempts: AttemptView[];
  compensation?: CompensationView;
  /** Items of a for_each step (0 when not a for_each step or unknown). */
  items: number;
  /** The step's `for_each` expression, from the plan. */
  forEach?: string;
  /** Whether the plan forwards this step's stream. */
  stream?: boolean;
  request?: JsonObject;
  response?: JsonObject;
  error?: ErrorView;
  /** Forwarded messages received from this step. */
  messages: number;
}

export interface MessageView {
  /** Arrival order in this view (stable React key). */
  seq: number;
  stepId: string;
  index: number;
  timeMs?: number;
  message?: JsonObject;
}

export interface ExecView {
  id: string;
  patternName: string;
  patternVersion: string;
  status: ExecutionStatus;
  startMs?: number;
  durationMs?: number;
  input?: JsonObject;
  output?: JsonObject;
  error?: ErrorView;
  idempotencyKey: string;
  steps: StepView[];
  /** The last MAX_MESSAGES forwarded messages, oldest first. */
  messages: MessageView[];
  /** Every forwarded message received, including those dropped from `messages`. */
  messageCount: number;
  /** Whether `steps` come from a full record (GetExecution) rather than events only. */
  recorded: boolean;
  /** Events before this view started watching were missed (it joined a running execution). */
  joinedLate: boolean;
  /** The newest server time seen (event times), for "now" on the server's clock. */
  lastEventMs?: number;
  /** Client clock minus server clock (plus the smallest delivery delay), as seen on events. */
  skewMs?: number;
}

export function emptyView(id: string): ExecView {
  return {
    id,
    patternName: "",
    patternVersion: "",
    status: ExecutionStatus.UNSPECIFIED,
    idempotencyKey: "",
    steps: [],
    messages: [],
    messageCount: 0,
    recorded: false,
    joinedLate: false,
  };
}

export function isFinal(s: ExecutionStatus): boolean {
  return (
    s === ExecutionStatus.SUCCEEDED ||
    s === ExecutionStatus.FAILED ||
    s === ExecutionStatus.CANCELLED ||
    s === ExecutionStatus.COMPENSATED
  );
}

export function statusName(s: ExecutionStatus | StepStatus, kind: "execution" | "step" = "execution"): string {
  const name = kind === "execution" ? ExecutionStatus[s as ExecutionStatus] : StepStatus[s as StepStatus];
  return name ?? String(s);
}

/** Milliseconds with the sub-millisecond part kept (the library's helpers round it away). */
export const tsMs = (t: Timestamp | undefined): number | undefined => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : undefined);
export const durMs = (d: Duration | undefined): number | undefined => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : undefined);

function errorView(e: ExecutionError | undefined): ErrorView | undefined {
  return e ? { code: e.code, message: e.message, stepId: e.stepId } : undefined;
}

function stepOf(view: ExecView, id: string): StepView {
  let s = view.steps.find((x) => x.id === id);
  if (!s) {
    s = { id, call: "", status: StepStatus.PENDING, attempts: [], items: 0, messages: 0 };
    view.steps.push(s);
  }
  return s;
}

/** What a step of the plan does, in one line: its action, or the event it emits or waits for. */
export function planCall(step: Pattern["steps"][number]): string {
  if (step.call) return step.call;
  if (step.emit) return `emit:${step.emit.type}`;
  if (step.waitFor) {
    const types = step.waitFor.event ? [step.waitFor.event] : step.waitFor.any.map((b) => b.event);
    return `wait_for:${types.join("|")}`;
  }
  return "";
}

/** Adds the plan's steps not seen yet (pending) and orders every step as the document does. */
export function applyPlan(view: ExecView, plan: Pattern): void {
  const order = new Map<string, number>();
  plan.steps.forEach((p, i) => {
    order.set(p.id, i);
    const s = stepOf(view, p.id);
    if (!s.call) s.call = planCall(p);
    if (p.forEach) s.forEach = p.forEach;
    if (p.stream) s.stream = true;
  });
  view.steps.sort((a, b) => (order.get(a.id) ?? 1e9) - (order.get(b.id) ?? 1e9));
}

/** Replaces what `view` knows with a recorded execution, keeping the forwarded messages. */
export function applyRecord(view: ExecView, e: Execution): void {
  view.id = e.id || view.id;
  view.patternName = e.patternName || view.patternName;
  view.patternVersion = e.patternVersion || view.patternVersion;
  view.status = e.status;
  view.startMs = tsMs(e.startedAt) ?? view.startMs;
  view.durationMs = durMs(e.duration) ?? (isFinal(e.status) ? view.durationMs : undefined);
  view.input = e.input ?? view.input;
  view.output = e.output ?? view.output;
  view.error = errorView(e.error);
  view.idempotencyKey = e.idempotencyKey;
  view.recorded = isFinal(e.status);
  const known = new Map(view.steps.map((s) => [s.id, s]));
  const steps: StepView[] = [];
  for (const r of e.steps) {
    const old = known.get(r.stepId);
    known.delete(r.stepId);
    steps.push({
      id: r.stepId,
      call: r.call || old?.call || "",
      status: r.status,
      startMs: tsMs(r.startedAt) ?? old?.startMs,
      durationMs: durMs(r.duration) ?? old?.durationMs,
      attempts: r.attempts.length
        ? r.attempts.map((a) => ({
            attempt: a.attempt,
            startMs: tsMs(a.startedAt),
            durationMs: durMs(a.duration),
            code: a.code,
            message: a.message,
          }))
        : (old?.attempts ?? []),
      compensation: r.compensation
        ? {
            call: r.compensation.call,
            status: r.compensation.status,
            startMs: tsMs(r.compensation.startedAt),
            durationMs: durMs(r.compensation.duration),
            error: errorView(r.compensation.error),
          }
        : old?.compensation,
      items: r.items || old?.items || 0,
      forEach: old?.forEach,
      stream: old?.stream,
      request: r.request ?? old?.request,
      response: r.response ?? old?.response,
      error: errorView(r.error) ?? old?.error,
      messages: old?.messages ?? 0,
    });
  }
  // Steps known from the plan or from events but absent from the record (not reached; or a
  // journal summary that lists only completed steps) stay as they were.
  for (const s of known.values()) steps.push(s);
  view.steps = steps;
}

/** Applies one live event. Returns true when it was the `finished` event. */
export function applyEvent(view: ExecView, ev: ExecutionEvent, receivedMs = Date.now()): boolean {
  const t = tsMs(ev.time);
  if (ev.executionId) view.id = ev.executionId;
  if (t !== undefined) {
    view.lastEventMs = Math.max(view.lastEventMs ?? t, t);
    // The smallest observed (receive - send) is the closest to the clock difference.
    const skew = receivedMs - t;
    view.skewMs = view.skewMs === undefined ? skew : Math.min(view.skewMs, skew);
  }
  const e = ev.event;
  switch (e.case) {
    case "started":
      view.patternName = e.value.patternName;
      view.patternVersion = e.value.patternVersion;
      view.status = ExecutionStatus.RUNNING;
      view.startMs = t ?? view.startMs;
      return false;
    case "stepStarted": {
      if (view.status === ExecutionStatus.UNSPECIFIED) view.status = ExecutionStatus.RUNNING;
      const s = stepOf(view, e.value.stepId);
      s.status = StepStatus.RUNNING;
      s.startMs = s.startMs ?? t;
      const n = e.value.attempt || 1;
      if (!s.attempts.some((a) => a.attempt === n)) s.attempts.push({ attempt: n, startMs: t, code: "", message: "" });
      return false;
    }
    case "stepRetrying": {
      const s = stepOf(view, e.value.stepId);
      s.status = StepStatus.RUNNING;
      const next = e.value.attempt || s.attempts.length + 1;
      const failed = s.attempts.find((a) => a.attempt === next - 1);
      if (failed) {
        failed.code = e.value.error?.code ?? "UNKNOWN";
        failed.message = e.value.error?.message ?? "";
        if (t !== undefined && failed.startMs !== undefined) failed.durationMs = Math.max(0, t - failed.startMs);
      } else {
        s.attempts.push({
          attempt: next - 1,
          code: e.value.error?.code ?? "UNKNOWN",
          message: e.value.error?.message ?? "",
        });
      }
      // The next attempt starts after the backoff; its exact start comes with the record.
      s.attempts.push({ attempt: next, startMs: t, code: "", message: "" });
      return false;
    }
    case "stepSucceeded":
    case "stepFailed": {
      const s = stepOf(view, e.value.stepId);
      const ok = e.case === "stepSucceeded";
      s.status = ok ? StepStatus.SUCCEEDED : StepStatus.FAILED;
      s.durationMs = durMs(e.value.duration) ?? s.durationMs;
      if (s.startMs === undefined && t !== undefined && s.durationMs !== undefined) s.startMs = t - s.durationMs;
      if (!ok) s.error = errorView(e.value.error);
      const last = s.attempts[s.attempts.length - 1];
      if (last && !last.code) {
        last.code = ok ? "OK" : (e.value.error?.code ?? "UNKNOWN");
        last.message = ok ? "" : (e.value.error?.message ?? "");
        if (t !== undefined && last.startMs !== undefined) last.durationMs = Math.max(0, t - last.startMs);
      }
      return false;
    }
    case "stepSkipped": {
      stepOf(view, e.value.stepId).status = StepStatus.SKIPPED;
      return false;
    }
    case "stepCompensated": {
      const s = stepOf(view, e.value.stepId);
      const d = durMs(e.value.duration);
      s.compensation = {
        call: s.compensation?.call ?? "",
        status: e.value.error ? StepStatus.FAILED : StepStatus.SUCCEEDED,
        startMs: t !== undefined && d !== undefined ? t - d : t,
        durationMs: d,
        error: errorView(e.value.error),
      };
      return false;
    }
    case "message": {
      const m = e.value;
      view.messageCount += 1;
      stepOf(view, m.stepId).messages += 1;
      view.messages.push({ seq: view.messageCount, stepId: m.stepId, index: Number(m.index), timeMs: t, message: m.message });
      // Trimmed in batches: amortised O(1) per message.
      if (view.messages.length >= 2 * MAX_MESSAGES) view.messages.splice(0, view.messages.length - MAX_MESSAGES);
      return false;
    }
    case "finished": {
      const r = e.value;
      view.id = r.executionId || view.id;
      view.status = r.status;
      view.output = r.output ?? view.output;
      view.error = errorView(r.error);
      if (isFinal(r.status) && view.startMs !== undefined && t !== undefined && view.durationMs === undefined) {
        view.durationMs = Math.max(0, t - view.startMs);
      }
      // Steps still running when the execution ended did not finish.
      if (isFinal(r.status)) {
        for (const s of view.steps) {
          if (s.status === StepStatus.RUNNING) s.status = StepStatus.CANCELLED;
        }
      }
      return true;
    }
    default:
      return false;
  }
}

/** A copy React can hold: new arrays and step objects, the last MAX_MESSAGES messages. */
export function snapshot(view: ExecView): ExecView {
  const messages =
    view.messages.length > MAX_MESSAGES ? view.messages.slice(view.messages.length - MAX_MESSAGES) : view.messages.slice();
  return {
    ...view,
    steps: view.steps.map((s) => ({ ...s, attempts: s.attempts.map((a) => ({ ...a })) })),
    messages,
  };
}

/** `12 ms`, `1.24 s`, `3 m 05 s`, `2 h 01 m`. */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} m`;
}

/** Local date and time with seconds, e.g. `2025-01-31 14:05:09`. */
export function formatTime(ms: number | undefined): string {
  if (ms === undefined) return "—";
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

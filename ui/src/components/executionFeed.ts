// Where a timeline's data comes from, outside React so navigating never drops it:
//
// - `startRun` runs a pattern with ExecutePatternStream. The server cancels an execution whose
//   ExecutePatternStream caller goes away (crates/server/src/api/executions.rs: the engine sees its
//   event channel close), so the stream is held here, at module level, for as long as the
//   execution runs — whatever page the user moves to in the app. The run page and the timeline of
//   `#/executions/ID` read the same feed, from the first event. Leaving the app (reload, closing
//   the tab) would cancel it: the browser asks first (beforeunload) while such a run streams.
// - `followExecution` watches any other execution: GetExecution, then WatchExecution for live
//   events until it finishes, reconnecting if the stream drops while it still runs, and polling
//   GetExecution while a durable execution is parked (waiting for an event, not in memory).
//
// When the execution finishes, GetExecution replaces the event-built steps with the full record
// (requests, responses, exact attempt times); forwarded messages are kept.
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, errorText, isCode, nexus } from "../api";
import type { ExecutionEvent, Pattern } from "../gen/nexus/v1/nexus_pb";
import { ExecutionStatus } from "../gen/nexus/v1/nexus_pb";
import { applyEvent, applyPlan, applyRecord, emptyView, isFinal, snapshot, type ExecView } from "./timelineModel";

export type Connection =
  /** Loading the execution. */
  | "connecting"
  /** Receiving its events. */
  | "live"
  /** The stream dropped while it runs; trying again. */
  | "reconnecting"
  /** Parked (a durable execution waiting for an event): looked up every few seconds. */
  | "polling"
  /** Finished (or nothing more will come). */
  | "done";

export interface FeedState {
  view: ExecView;
  connection: Connection;
  /** Why the feed cannot show the execution (e.g. NOT_FOUND), verbatim from the server. */
  error?: string;
  /** A transient problem (the last reconnection's error). */
  notice?: string;
  /** This tab started it and holds its ExecutePatternStream. */
  ownStream: boolean;
}

const PUBLISH_EVERY_MS = 50;

export class Feed {
  readonly view: ExecView;
  private state: FeedState;
  private listeners = new Set<() => void>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private planFor = "";
  connection: Connection = "connecting";
  /** This tab's ExecutePatternStream for it is open (closing the tab would cancel it). */
  streamOpen = false;
  error?: string;
  notice?: string;
  private abort = new AbortController();

  constructor(
    id: string,
    readonly ownStream: boolean,
  ) {
    this.view = emptyView(id);
    this.state = this.make();
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  private make(): FeedState {
    return {
      view: snapshot(this.view),
      connection: this.connection,
      error: this.error,
      notice: this.notice,
      ownStream: this.ownStream,
    };
  }

  getState = (): FeedState => this.state;

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  /** Publishes a new state to React: at most every 50 ms, or now. */
  publish(now = false): void {
    if (now) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.flush();
      return;
    }
    if (!this.timer) this.timer = setTimeout(() => this.flush(), PUBLISH_EVERY_MS);
  }

  private flush(): void {
    this.timer = null;
    this.state = this.make();
    for (const l of this.listeners) l();
  }

  set(patch: { connection?: Connection; error?: string | undefined; notice?: string | undefined }): void {
    if ("connection" in patch && patch.connection) this.connection = patch.connection;
    if ("error" in patch) this.error = patch.error;
    if ("notice" in patch) this.notice = patch.notice;
    this.publish(true);
  }

  /** Lists the plan's steps (pending ones too) once the pattern is known. */
  async loadPlan(): Promise<void> {
    const key = `${this.view.patternName}@${this.view.patternVersion}`;
    if (!this.view.patternName || this.planFor === key) return;
    this.planFor = key;
    let plan: Pattern;
    try {
      plan = await nexus.getPattern({ name: this.view.patternName, version: this.view.patternVersion });
    } catch {
      return; // The timeline works without it (the pattern may not be visible to this key).
    }
    applyPlan(this.view, plan);
    this.publish(true);
  }

  /** Replaces the event-built steps with the recorded execution (after it finished). */
  async loadRecord(): Promise<void> {
    try {
      const e = await nexus.getExecution({ executionId: this.view.id }, { signal: this.signal });
      applyRecord(this.view, e);
      void this.loadPlan();
      this.publish(true);
    } catch (err) {
      if (!this.signal.aborted) this.set({ notice: `The full record could not be loaded: ${errorText(err)}` });
    }
  }

  /** Applies an event; loads the plan on the first one that names the pattern. */
  apply(ev: ExecutionEvent): boolean {
    const hadPattern = !!this.view.patternName;
    const finished = applyEvent(this.view, ev);
    if (!hadPattern && this.view.patternName) void this.loadPlan();
    this.publish(finished);
    return finished;
  }

  stop(): void {
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Runs started here.

const runs = new Map<string, Feed>();

/** The feed of an execution this tab started (and still holds), if any. */
export function ownRun(id: string): Feed | undefined {
  return runs.get(id);
}

/** Runs started here and kept (with their forwarded messages, which the server does not keep). */
const KEEP_FINISHED = 20;

/** How many executions started here still stream (leaving the page would cancel them). */
export function streamingRuns(): number {
  let n = 0;
  for (const f of runs.values()) if (f.streamOpen) n += 1;
  return n;
}

/** Forgets the oldest finished runs beyond KEEP_FINISHED (their timelines then come from the server). */
function prune(): void {
  const finished = [...runs.entries()].filter(([, f]) => f.connection === "done" && !f.streamOpen);
  for (const [id] of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) runs.delete(id);
}

if (typeof window !== "undefined") {
  window.addEventListener("beforeunload", (e) => {
    if (streamingRuns() > 0) {
      // Leaving closes the streams, and the server cancels their executions.
      e.preventDefault();
    }
  });
}

export interface RunRequest {
  patternName: string;
  version: string;
  input: JsonObject;
  idempotencyKey?: string;
}

/**
 * Starts an execution with ExecutePatternStream and keeps reading its events here. Resolves with
 * the execution id on its first event; rejects with the server's error when it refuses to start
 * (INVALID_ARGUMENT input, PERMISSION_DENIED, NOT_FOUND…).
 */
export function startRun(req: RunRequest): Promise<string> {
  return new Promise((resolve, reject) => {
    let feed: Feed | undefined;
    void (async () => {
      try {
        const stream = nexus.executePatternStream({
          patternName: req.patternName,
          version: req.version,
          input: req.input,
          idempotencyKey: req.idempotencyKey ?? "",
        });
        for await (const ev of stream) {
          if (!feed) {
            feed = new Feed(ev.executionId, true);
            feed.view.patternName = req.patternName;
            feed.view.patternVersion = req.version;
            feed.view.input = req.input;
            feed.view.status = ExecutionStatus.RUNNING;
            feed.connection = "live";
            feed.streamOpen = true;
            runs.set(ev.executionId, feed);
            prune();
            resolve(ev.executionId);
          }
          if (feed.apply(ev)) break;
        }
        if (feed) feed.streamOpen = false;
        if (!feed) {
          reject(new Error("The server ended the stream without starting an execution."));
          return;
        }
        if (isFinal(feed.view.status)) {
          await feed.loadRecord();
          feed.set({ connection: "done" });
        } else if (feed.view.status === ExecutionStatus.RUNNING) {
          // Parked durable execution (waiting for an event): it lives in the journal, the
          // stream ended without cancelling it. Follow it from there.
          feed.set({ connection: "polling" });
          void follow(feed);
        } else {
          feed.set({ connection: "done" });
        }
      } catch (err) {
        if (!feed) {
          reject(err);
          return;
        }
        // The stream broke: the server cancels an execution whose caller went away. Show what it
        // recorded.
        feed.streamOpen = false;
        feed.set({
          notice: `The stream of this execution broke (${errorText(err)}); the server cancels an execution whose caller goes away.`,
        });
        void follow(feed);
      }
    })();
  });
}

// ---------------------------------------------------------------------------------------------
// Following any execution.

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((res) => {
    const t = setTimeout(res, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      res();
    });
  });

/** Starts following an execution this tab did not start. `feed.stop()` ends it. */
export function followExecution(id: string): Feed {
  const feed = new Feed(id, false);
  void follow(feed);
  return feed;
}

/** How long to wait before the n-th reconnection (n from 0). */
export function backoffMs(n: number): number {
  return Math.min(5000, 250 * 2 ** n);
}

async function follow(feed: Feed): Promise<void> {
  const id = feed.view.id;
  const signal = feed.signal;
  let failures = 0;
  let seen = false;
  while (!signal.aborted) {
    // 1. What the server recorded so far.
    let running = true;
    try {
      const e = await nexus.getExecution({ executionId: id }, { signal });
      // An ephemeral execution running on the server: its record has what it runs, not yet its
      // steps (those done before we joined are not replayed; the rest arrive as events).
      if (!seen && e.status === ExecutionStatus.RUNNING && e.steps.length === 0 && feed.view.steps.length === 0) {
        feed.view.joinedLate = true;
      }
      seen = true;
      applyRecord(feed.view, e);
      void feed.loadPlan();
      if (isFinal(e.status)) {
        feed.set({ connection: "done", notice: undefined, error: undefined });
        return;
      }
    } catch (err) {
      if (signal.aborted) return;
      if (isCode(err, Code.FailedPrecondition)) {
        // Running on this server: its progress so far is in memory only; the events follow.
        if (!seen && feed.view.steps.length === 0) feed.view.joinedLate = true;
        feed.view.status = ExecutionStatus.RUNNING;
        seen = true;
      } else if (isCode(err, Code.NotFound) || isCode(err, Code.PermissionDenied) || isCode(err, Code.InvalidArgument)) {
        if (!seen) {
          feed.set({ connection: "done", error: errorText(err) });
          return;
        }
        running = false;
      } else {
        feed.set({ connection: "reconnecting", notice: errorText(err) });
        await sleep(backoffMs(failures++), signal);
        continue;
      }
    }
    if (!running) {
      feed.set({ connection: "done" });
      return;
    }
    // 2. Its events, live (from when the server answers with its headers).
    let finished = false;
    const onHeader = () => feed.set({ connection: "live", notice: undefined, error: undefined });
    try {
      for await (const ev of nexus.watchExecution({ executionId: id }, { signal, onHeader })) {
        failures = 0;
        if (feed.apply(ev)) {
          finished = true;
          break;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (isCode(err, Code.NotFound)) {
        // Not in memory: a durable execution parked until an event resumes it.
        feed.set({ connection: "polling" });
        await sleep(2000, signal);
        continue;
      }
      feed.set({ connection: "reconnecting", notice: `The live stream dropped (${errorText(err)}); reconnecting…` });
      await sleep(backoffMs(failures++), signal);
      continue;
    }
    if (signal.aborted) return;
    if (finished && isFinal(feed.view.status)) {
      await feed.loadRecord();
      feed.set({ connection: "done", notice: undefined });
      return;
    }
    if (finished) {
      // Finished RUNNING: suspended here (parked, or handed over): look it up again.
      feed.set({ connection: "polling" });
      await sleep(2000, signal);
      continue;
    }
    // The stream ended without the execution's end: reconnect.
    feed.set({ connection: "reconnecting", notice: "The live stream ended early; reconnecting…" });
    await sleep(backoffMs(failures++), signal);
  }
}

import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  ExecutionEventSchema,
  ExecutionSchema,
  ExecutionStatus,
  PatternSchema,
  StepStatus,
  type ExecutionEvent,
} from "../gen/nexus/v1/nexus_pb";
import { applyEvent, applyPlan, applyRecord, emptyView, formatDuration, MAX_MESSAGES, snapshot } from "./timelineModel";

const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
const ev = (ms: number, event: ExecutionEvent["event"]): ExecutionEvent =>
  create(ExecutionEventSchema, { executionId: "x1", time: timestampFromMs(T0 + ms), event });
const step = (stepId: string, extra: Record<string, unknown> = {}) => ({ stepId, attempt: 0, ...extra });

describe("applyEvent", () => {
  it("builds steps, attempts, retries, failure and compensation from live events", () => {
    const v = emptyView("x1");
    const events: ExecutionEvent[] = [
      ev(0, { case: "started", value: { patternName: "p", patternVersion: "1.0.0" } as never }),
      ev(1, { case: "stepStarted", value: step("a", { attempt: 1 }) as never }),
      ev(5, { case: "stepSucceeded", value: step("a", { duration: durationFromMs(4) }) as never }),
      ev(6, { case: "stepStarted", value: step("b", { attempt: 1 }) as never }),
      ev(10, { case: "stepRetrying", value: step("b", { attempt: 2, error: { code: "UNAVAILABLE", message: "down", stepId: "b" } }) as never }),
      ev(30, { case: "stepRetrying", value: step("b", { attempt: 3, error: { code: "UNAVAILABLE", message: "down", stepId: "b" } }) as never }),
      ev(50, {
        case: "stepFailed",
        value: step("b", { duration: durationFromMs(44), error: { code: "UNAVAILABLE", message: "gave up", stepId: "b" } }) as never,
      }),
      ev(55, { case: "stepCompensated", value: step("a", { duration: durationFromMs(3) }) as never }),
      ev(60, {
        case: "finished",
        value: { executionId: "x1", status: ExecutionStatus.COMPENSATED, error: { code: "UNAVAILABLE", message: "gave up", stepId: "b" } } as never,
      }),
    ];
    const finished = events.map((e) => applyEvent(v, e, T0 + 1000));
    expect(finished).toEqual([false, false, false, false, false, false, false, false, true]);
    expect(v.patternName).toBe("p");
    expect(v.status).toBe(ExecutionStatus.COMPENSATED);
    expect(v.durationMs).toBe(60);
    const [a, b] = v.steps;
    expect(a).toMatchObject({ id: "a", status: StepStatus.SUCCEEDED, durationMs: 4, startMs: T0 + 1 });
    expect(a.attempts).toEqual([{ attempt: 1, startMs: T0 + 1, durationMs: 4, code: "OK", message: "" }]);
    expect(a.compensation).toMatchObject({ status: StepStatus.SUCCEEDED, startMs: T0 + 52, durationMs: 3 });
    expect(b.status).toBe(StepStatus.FAILED);
    expect(b.attempts.map((x) => [x.attempt, x.code])).toEqual([
      [1, "UNAVAILABLE"],
      [2, "UNAVAILABLE"],
      [3, "UNAVAILABLE"],
    ]);
    expect(b.attempts[0].durationMs).toBe(4);
    expect(b.error?.message).toBe("gave up");
    expect(v.skewMs).toBe(1000 - 60);
  });

  it("keeps the last MAX_MESSAGES stream messages and counts them all", () => {
    const v = emptyView("x1");
    for (let i = 0; i < 2500; i++) {
      applyEvent(v, ev(i, { case: "message", value: { stepId: "live", index: BigInt(i), message: { n: i } } as never }));
    }
    const s = snapshot(v);
    expect(s.messageCount).toBe(2500);
    expect(s.messages).toHaveLength(MAX_MESSAGES);
    expect(s.messages[0].index).toBe(1500);
    expect(s.messages[MAX_MESSAGES - 1].message).toEqual({ n: 2499 });
    expect(v.messages.length).toBeLessThan(2 * MAX_MESSAGES);
    expect(s.steps.find((x) => x.id === "live")?.messages).toBe(2500);
  });

  it("marks steps still running as cancelled when the execution ends", () => {
    const v = emptyView("x1");
    applyEvent(v, ev(0, { case: "stepStarted", value: step("w", { attempt: 1 }) as never }));
    applyEvent(v, ev(9, { case: "finished", value: { executionId: "x1", status: ExecutionStatus.CANCELLED } as never }));
    expect(v.steps[0].status).toBe(StepStatus.CANCELLED);
  });
});

describe("applyRecord and applyPlan", () => {
  it("lists pending steps of the plan in document order and keeps forwarded messages", () => {
    const v = emptyView("x1");
    applyEvent(v, ev(0, { case: "message", value: { stepId: "live", index: 0n, message: { a: 1 } } as never }));
    applyPlan(
      v,
      create(PatternSchema, {
        name: "p",
        steps: [
          { id: "first", call: "s.S/A" },
          { id: "live", call: "s.S/Stream", stream: true },
          { id: "wait", waitFor: { event: "go" } },
          { id: "shout", emit: { type: "done" }, forEach: "${{ input.xs }}" },
        ],
      }),
    );
    expect(v.steps.map((s) => [s.id, s.call, s.status])).toEqual([
      ["first", "s.S/A", StepStatus.PENDING],
      ["live", "s.S/Stream", StepStatus.PENDING],
      ["wait", "wait_for:go", StepStatus.PENDING],
      ["shout", "emit:done", StepStatus.PENDING],
    ]);
    applyRecord(
      v,
      create(ExecutionSchema, {
        id: "x1",
        patternName: "p",
        patternVersion: "1.0.0",
        status: ExecutionStatus.SUCCEEDED,
        startedAt: timestampFromMs(T0),
        duration: durationFromMs(12.5),
        steps: [
          {
            stepId: "first",
            call: "s.S/A",
            status: StepStatus.SUCCEEDED,
            startedAt: timestampFromMs(T0 + 1),
            duration: { seconds: 0n, nanos: 2_500_000 },
            request: { q: 1 },
            attempts: [{ attempt: 1, code: "OK", startedAt: timestampFromMs(T0 + 1), duration: durationFromMs(2) }],
          },
          { stepId: "shout", call: "emit:done", status: StepStatus.SUCCEEDED, items: 3 },
        ],
      }),
    );
    expect(v.recorded).toBe(true);
    expect(v.durationMs).toBe(12.5);
    expect(v.steps.find((s) => s.id === "first")?.durationMs).toBe(2.5);
    expect(v.steps.find((s) => s.id === "first")?.request).toEqual({ q: 1 });
    expect(v.steps.find((s) => s.id === "shout")).toMatchObject({ items: 3, forEach: "${{ input.xs }}" });
    expect(v.steps.find((s) => s.id === "live")?.stream).toBe(true);
    expect(v.messageCount).toBe(1);
  });
});

describe("formatDuration", () => {
  it("reads well at every scale", () => {
    expect(formatDuration(undefined)).toBe("—");
    expect(formatDuration(0.42)).toBe("0.42 ms");
    expect(formatDuration(4.06)).toBe("4.1 ms");
    expect(formatDuration(123.4)).toBe("123 ms");
    expect(formatDuration(1234)).toBe("1.23 s");
    expect(formatDuration(12_345)).toBe("12.3 s");
    expect(formatDuration(185_000)).toBe("3 m 05 s");
    expect(formatDuration(7_260_000)).toBe("2 h 01 m");
  });
});

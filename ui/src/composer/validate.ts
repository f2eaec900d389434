// Live diagnostics: ValidatePattern on every edit, debounced, stale requests cancelled. A document
// the API cannot even carry (a field of the wrong shape, an unknown key) is diagnosed here, with
// the step it is in.
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { useEffect, useRef, useState } from "react";
import { errorText, nexus } from "../api";
import { PatternSchema, Severity, StepSchema, type Pattern } from "../gen/nexus/v1/nexus_pb";
import type { PatternDoc } from "../model/types";

export interface Diag {
  path: string;
  message: string;
  severity: "error" | "warning";
}

export const DEBOUNCE_MS = 200;

function shapeMessage(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.replace(/^cannot decode (message|field) /, "cannot read ");
}

/** The Pattern message of a document, or the diagnostic saying why it has no such shape. */
export function toPattern(doc: PatternDoc): { pattern: Pattern } | { diag: Diag } {
  try {
    return { pattern: fromJson(PatternSchema, doc as JsonValue) };
  } catch (err) {
    const steps = Array.isArray(doc.steps) ? doc.steps : [];
    for (let i = 0; i < steps.length; i++) {
      try {
        fromJson(StepSchema, steps[i] as JsonValue);
      } catch (e) {
        return { diag: { path: `steps[${i}]`, message: shapeMessage(e), severity: "error" } };
      }
    }
    return { diag: { path: "", message: shapeMessage(err), severity: "error" } };
  }
}

export function toDiag(d: { path: string; message: string; severity: Severity }): Diag {
  return { path: d.path, message: d.message, severity: d.severity === Severity.WARNING ? "warning" : "error" };
}

export interface Validation {
  diagnostics: Diag[];
  /** A request is on its way (or waiting for the debounce). */
  pending: boolean;
  /** The call itself failed (server down, refused). */
  error: string | null;
  /** The document the diagnostics are about. */
  checked: PatternDoc | null;
}

export function useValidation(doc: PatternDoc): Validation {
  const [state, setState] = useState<Validation>({ diagnostics: [], pending: true, error: null, checked: null });
  const seq = useRef(0);
  useEffect(() => {
    const my = ++seq.current;
    const ctrl = new AbortController();
    setState((s) => (s.pending ? s : { ...s, pending: true }));
    const timer = setTimeout(async () => {
      const shaped = toPattern(doc);
      if ("diag" in shaped) {
        if (my === seq.current) setState({ diagnostics: [shaped.diag], pending: false, error: null, checked: doc });
        return;
      }
      try {
        const res = await nexus.validatePattern({ pattern: shaped.pattern }, { signal: ctrl.signal });
        if (my === seq.current) setState({ diagnostics: res.diagnostics.map(toDiag), pending: false, error: null, checked: doc });
      } catch (err) {
        if (ctrl.signal.aborted || my !== seq.current) return;
        setState((s) => ({ ...s, pending: false, error: errorText(err), checked: doc }));
      }
    }, DEBOUNCE_MS);
    return () => {
      clearTimeout(timer);
      ctrl.abort();
    };
  }, [doc]);
  return state;
}

/** `steps[3].with.owner_id` → `{ step: 3, field: "with.owner_id" }`; `output.x` → `{ output: "output.x" }`. */
export function locate(path: string): { step?: number; field?: string; output?: string; input?: string } {
  const m = /^steps\[(\d+)\](?:\.(.*))?$/.exec(path);
  if (m) return { step: Number(m[1]), field: m[2] ?? "" };
  if (path === "output" || path.startsWith("output.") || path.startsWith("output[")) return { output: path };
  if (path === "input" || path.startsWith("input.") || path.startsWith("input[")) return { input: path };
  return {};
}

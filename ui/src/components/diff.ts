// Pure helpers behind the read-only pattern graph and the marketplace's version diff: which steps a
// step reads (`${{ steps.X… }}` references and `depends_on`), and how the step-level changes of
// DiffPatterns map onto the graph (added / removed / changed steps).
import type { JsonValue } from "@bufbuild/protobuf";
import { ChangeKind, type Pattern, type PatternChange, type Step } from "../gen/nexus/v1/nexus_pb";

export type StepChange = "added" | "removed" | "changed";

const EXPR = /\$\{\{([\s\S]*?)\}\}/g;
// `steps.user`, `steps.user.user.id`, `steps["user"]`, `steps['user']`.
const STEP_REF = /\bsteps\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_-]*)|\[\s*["']([^"']+)["']\s*\])/g;

/** The step ids referenced by the `${{ … }}` expressions in `text`. */
export function refsInText(text: string, out: Set<string> = new Set()): Set<string> {
  if (!text.includes("${{")) return out;
  for (const m of text.matchAll(EXPR)) {
    for (const r of m[1].matchAll(STEP_REF)) out.add(r[1] ?? r[2]);
  }
  return out;
}

function refsInJson(value: JsonValue | undefined, out: Set<string>): void {
  if (value === undefined || value === null) return;
  if (typeof value === "string") {
    refsInText(value, out);
  } else if (Array.isArray(value)) {
    for (const v of value) refsInJson(v, out);
  } else if (typeof value === "object") {
    for (const k of Object.keys(value)) refsInJson(value[k], out);
  }
}

/** The steps `step` reads through expressions (in `with`, `when`, `for_each`, emit, wait, compensation). */
export function stepReferences(step: Step): Set<string> {
  const out = new Set<string>();
  refsInJson(step.with, out);
  refsInText(step.when, out);
  refsInText(step.forEach, out);
  if (step.compensate) refsInJson(step.compensate.with, out);
  if (step.emit) {
    refsInJson(step.emit.data, out);
    refsInText(step.emit.subject, out);
  }
  if (step.waitFor) {
    refsInText(step.waitFor.match, out);
    for (const b of step.waitFor.any) refsInText(b.match, out);
  }
  out.delete(step.id);
  return out;
}

export interface StepEdge {
  from: string;
  to: string;
  /** `data`: an expression reads the step's output; `order`: an explicit `depends_on`. */
  kind: "data" | "order";
}

/** Every edge between the steps of `steps` (references to unknown steps are left out). */
export function stepEdges(steps: readonly Step[]): StepEdge[] {
  const ids = new Set(steps.map((s) => s.id));
  const edges: StepEdge[] = [];
  const seen = new Set<string>();
  for (const s of steps) {
    for (const from of stepReferences(s)) {
      if (ids.has(from) && !seen.has(`${from}>${s.id}`)) {
        seen.add(`${from}>${s.id}`);
        edges.push({ from, to: s.id, kind: "data" });
      }
    }
    for (const from of s.dependsOn) {
      if (ids.has(from) && from !== s.id && !seen.has(`${from}>${s.id}`)) {
        seen.add(`${from}>${s.id}`);
        edges.push({ from, to: s.id, kind: "order" });
      }
    }
  }
  return edges;
}

/** The step a change path (`steps.welcome`, `steps.welcome.with.subject`) is about, if any. */
export function changedStep(path: string): { id: string; whole: boolean } | null {
  if (!path.startsWith("steps.")) return null;
  const rest = path.slice("steps.".length);
  const dot = rest.indexOf(".");
  return dot < 0 ? { id: rest, whole: true } : { id: rest.slice(0, dot), whole: false };
}

/** Per step, how it changed: `steps.X` added/removed, anything under `steps.X.` changed. */
export function stepHighlights(changes: readonly PatternChange[]): Map<string, StepChange> {
  const out = new Map<string, StepChange>();
  for (const c of changes) {
    const s = changedStep(c.path);
    if (!s) continue;
    if (s.whole && c.kind === ChangeKind.ADDED) out.set(s.id, "added");
    else if (s.whole && c.kind === ChangeKind.REMOVED) out.set(s.id, "removed");
    else if (!out.has(s.id)) out.set(s.id, "changed");
  }
  return out;
}

/** The steps to draw for a diff: every step of `to`, then the steps only `from` has. */
export function diffSteps(from: Pattern, to: Pattern): Step[] {
  const ids = new Set(to.steps.map((s) => s.id));
  return [...to.steps, ...from.steps.filter((s) => !ids.has(s.id))];
}

export function changeKindName(kind: ChangeKind): StepChange | "unspecified" {
  switch (kind) {
    case ChangeKind.ADDED:
      return "added";
    case ChangeKind.REMOVED:
      return "removed";
    case ChangeKind.CHANGED:
      return "changed";
    default:
      return "unspecified";
  }
}

/** `NAME@VERSION` → its parts (the version is empty when there is no `@`). */
export function splitRef(ref: string): { name: string; version: string } {
  const at = ref.lastIndexOf("@");
  return at < 0 ? { name: ref, version: "" } : { name: ref.slice(0, at), version: ref.slice(at + 1) };
}

/** Semantic-version order: numeric parts numerically, a pre-release before its release. */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const noBuild = v.split("+", 1)[0];
    const dash = noBuild.indexOf("-");
    return dash < 0 ? { core: noBuild, pre: null } : { core: noBuild.slice(0, dash), pre: noBuild.slice(dash + 1) };
  };
  const parts = (s: string) => s.split(".");
  const cmpIds = (x: string[], y: string[]): number => {
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      if (x[i] === undefined) return -1;
      if (y[i] === undefined) return 1;
      const nx = /^\d+$/.test(x[i]) ? Number(x[i]) : NaN;
      const ny = /^\d+$/.test(y[i]) ? Number(y[i]) : NaN;
      if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
        if (nx !== ny) return nx - ny;
      } else if (!Number.isNaN(nx)) return -1;
      else if (!Number.isNaN(ny)) return 1;
      else if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
    }
    return 0;
  };
  const pa = parse(a);
  const pb = parse(b);
  const c = cmpIds(parts(pa.core), parts(pb.core));
  if (c !== 0) return c;
  if (pa.pre === null) return pb.pre === null ? 0 : 1;
  if (pb.pre === null) return -1;
  return cmpIds(parts(pa.pre), parts(pb.pre));
}

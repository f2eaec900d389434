// Edits of a document: pure functions returning a new document that shares every part it did not
// change (so memoized nodes of untouched steps do not re-render) and keeps the key order of what
// is there; a key the document lacks is inserted where the proto declares it.

import { edgesOf, stepsOf, type GraphEdge } from "./graph";
import { refExpression, renameInValue, type Ref } from "./refs";
import type { Json, JsonObj, PathPart, PatternDoc, StepDoc } from "./types";
import { isObj, PATTERN_KEYS, STEP_KEYS } from "./types";

/** `with.a[0].b` → `["with", "a", 0, "b"]`. */
export function parsePath(path: string): PathPart[] {
  const out: PathPart[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) {
    if (m[2] !== undefined) out.push(Number(m[2]));
    else out.push(m[1]);
  }
  return out;
}

export function getIn(v: Json | undefined, parts: readonly PathPart[]): Json | undefined {
  let cur: Json | undefined = v;
  for (const p of parts) {
    if (typeof p === "number") {
      if (!Array.isArray(cur)) return undefined;
      cur = cur[p];
    } else {
      if (!isObj(cur)) return undefined;
      cur = cur[p];
    }
  }
  return cur;
}

/** Copy of `obj` with `key` set; a new key goes where `order` puts it (else at the end). */
export function withKey(obj: JsonObj, key: string, value: Json | undefined, order?: readonly string[]): JsonObj {
  if (value === undefined) {
    if (!(key in obj)) return obj;
    const out: JsonObj = {};
    for (const [k, v] of Object.entries(obj)) if (k !== key) out[k] = v;
    return out;
  }
  if (key in obj) {
    if (obj[key] === value) return obj;
    return { ...obj, [key]: value };
  }
  const keys = Object.keys(obj);
  let at = keys.length;
  const rank = order?.indexOf(key) ?? -1;
  if (order && rank >= 0) {
    // After the last key the proto declares before it; else before the first declared after it.
    let last = -1;
    keys.forEach((k, i) => {
      const r = order.indexOf(k);
      if (r >= 0 && r < rank) last = i;
    });
    if (last >= 0) at = last + 1;
    else {
      at = keys.findIndex((k) => order.indexOf(k) > rank);
      if (at < 0) at = keys.length;
    }
  }
  const out: JsonObj = {};
  keys.forEach((k, i) => {
    if (i === at) out[key] = value;
    out[k] = obj[k];
  });
  if (at >= keys.length) out[key] = value;
  return out;
}

/**
 * Sets (or, with `undefined`, removes) the value at `parts`, creating objects on the way. Removing
 * prunes the objects it leaves empty below `keepDepth` parts.
 */
export function setIn(
  root: Json | undefined,
  parts: readonly PathPart[],
  value: Json | undefined,
  order?: (depth: number) => readonly string[] | undefined,
  keepDepth = 1,
): Json | undefined {
  if (parts.length === 0) return value;
  const go = (node: Json | undefined, d: number): Json | undefined => {
    const key = parts[d];
    if (d === parts.length - 1) {
      if (typeof key === "number") {
        const arr = Array.isArray(node) ? [...node] : [];
        if (value === undefined) arr.splice(key, 1);
        else arr[key] = value;
        return arr;
      }
      const obj = isObj(node) ? node : {};
      return withKey(obj, key, value, order?.(d));
    }
    const child = typeof key === "number" ? (Array.isArray(node) ? node[key] : undefined) : isObj(node) ? node[key] : undefined;
    if (value === undefined && child === undefined) return node;
    let next = go(child, d + 1);
    if (value === undefined && d + 1 >= keepDepth && isObj(next) && Object.keys(next).length === 0) next = undefined;
    if (typeof key === "number") {
      const arr = Array.isArray(node) ? [...node] : [];
      if (next === undefined) arr.splice(key, 1);
      else arr[key] = next;
      return arr;
    }
    return withKey(isObj(node) ? node : {}, key, next, order?.(d));
  };
  return go(root, 0);
}

const patternOrder = (d: number) => (d === 0 ? PATTERN_KEYS : undefined);

/** Sets a field of the pattern (`description`, `output.user_id`, `schedule.cron` …). */
export function setPatternField(doc: PatternDoc, path: string | PathPart[], value: Json | undefined): PatternDoc {
  const parts = typeof path === "string" ? parsePath(path) : path;
  return (setIn(doc, parts, value, patternOrder, 1) as PatternDoc | undefined) ?? {};
}

const stepOrder = (d: number) => (d === 0 ? STEP_KEYS : undefined);

/** Sets a field of step `index` (`with.owner_id`, `retry.max_attempts`, `when` …). */
export function setStepField(doc: PatternDoc, index: number, path: string | PathPart[], value: Json | undefined): PatternDoc {
  const steps = stepsOf(doc);
  const step = steps[index];
  if (step === undefined) return doc;
  const parts = typeof path === "string" ? parsePath(path) : path;
  const nextStep = (setIn(isObj(step) ? step : {}, parts, value, stepOrder, 1) as StepDoc | undefined) ?? {};
  if (nextStep === step) return doc;
  const nextSteps = [...steps];
  nextSteps[index] = nextStep;
  return withKey(doc, "steps", nextSteps, PATTERN_KEYS);
}

/** Replaces step `index` whole. */
export function replaceStep(doc: PatternDoc, index: number, step: Json): PatternDoc {
  const steps = [...stepsOf(doc)];
  steps[index] = step;
  return withKey(doc, "steps", steps, PATTERN_KEYS);
}

/** snake_case id from an action (`demo.user.v1.UserService/CreateUser` → `create_user`). */
export function idFromAction(action: string): string {
  // A sub-pattern call `pattern:NAME@VERSION` is named after the pattern.
  const sub = /^pattern:([^@]+)/.exec(action);
  const method = sub ? sub[1] : action.split("/").pop() || action.split(".").pop() || "step";
  const snake = method
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .replace(/[^A-Za-z0-9_]/g, "_")
    .toLowerCase();
  return /^[a-z_]/.test(snake) ? snake : `s_${snake}`;
}

/** `base`, or `base_2`, `base_3` … whichever no step uses. */
export function uniqueStepId(doc: PatternDoc, base: string): string {
  const used = new Set(stepsOf(doc).map((s) => (isObj(s) && typeof s.id === "string" ? s.id : "")));
  if (!used.has(base)) return base;
  for (let n = 2; ; n++) if (!used.has(`${base}_${n}`)) return `${base}_${n}`;
}

/** Appends a step calling `action` (id from the action, unique); returns the document and its index. */
export function addStep(doc: PatternDoc, action: string, id?: string): { doc: PatternDoc; index: number; id: string } {
  const stepId = id ?? uniqueStepId(doc, idFromAction(action));
  const step: StepDoc = { id: stepId, call: action };
  const steps = [...stepsOf(doc), step];
  return { doc: withKey(doc, "steps", steps, PATTERN_KEYS), index: steps.length - 1, id: stepId };
}

/** Removes step `index` and the `depends_on` entries naming it (expressions reading it stay: the diagnostics point at them). */
export function removeStep(doc: PatternDoc, index: number): PatternDoc {
  const steps = stepsOf(doc);
  const gone = steps[index];
  const goneId = isObj(gone) && typeof gone.id === "string" ? gone.id : null;
  const next = steps
    .filter((_, i) => i !== index)
    .map((s) => {
      if (!goneId || !isObj(s) || !Array.isArray(s.depends_on) || !s.depends_on.includes(goneId)) return s;
      const deps = s.depends_on.filter((d) => d !== goneId);
      return withKey(s, "depends_on", deps.length ? deps : undefined);
    });
  return withKey(doc, "steps", next, PATTERN_KEYS);
}

/** Moves step `from` to position `to`. */
export function moveStep(doc: PatternDoc, from: number, to: number): PatternDoc {
  const steps = [...stepsOf(doc)];
  const [s] = steps.splice(from, 1);
  steps.splice(to, 0, s);
  return withKey(doc, "steps", steps, PATTERN_KEYS);
}

function renameStepDoc(s: Json, from: string, to: string): Json {
  if (!isObj(s)) return s;
  let out = s;
  const set = (k: string, v: Json | undefined) => {
    if (v !== out[k]) out = withKey(out, k, v);
  };
  set("with", renameInValue(s.with, from, to, false));
  if (typeof s.when === "string") set("when", renameInValue(s.when, from, to, true));
  if (typeof s.for_each === "string") set("for_each", renameInValue(s.for_each, from, to, true));
  if (isObj(s.compensate)) set("compensate", withKey(s.compensate, "with", renameInValue(s.compensate.with, from, to, false)));
  if (isObj(s.emit)) {
    let e = withKey(s.emit, "data", renameInValue(s.emit.data, from, to, false));
    if (typeof e.subject === "string") e = withKey(e, "subject", renameInValue(e.subject, from, to, false));
    set("emit", e);
  }
  if (isObj(s.wait_for)) {
    let w = s.wait_for;
    if (typeof w.match === "string") w = withKey(w, "match", renameInValue(w.match, from, to, true));
    if (Array.isArray(w.any)) {
      const any = w.any.map((b) => (isObj(b) && typeof b.match === "string" ? withKey(b, "match", renameInValue(b.match, from, to, true)) : b));
      if (any.some((b, k) => b !== (w.any as Json[])[k])) w = withKey(w, "any", any);
    }
    set("wait_for", w);
  }
  if (Array.isArray(s.depends_on) && s.depends_on.includes(from)) {
    set(
      "depends_on",
      s.depends_on.map((d) => (d === from ? to : d)),
    );
  }
  return out;
}

/** Renames step `index` and every reference to it (`steps.old…`, `depends_on`, the output mapping). */
export function renameStep(doc: PatternDoc, index: number, newId: string): PatternDoc {
  const steps = stepsOf(doc);
  const step = steps[index];
  if (!isObj(step)) return doc;
  const old = typeof step.id === "string" ? step.id : "";
  if (old === newId) return doc;
  const firstWithOld = steps.findIndex((s) => isObj(s) && s.id === old);
  let next = setStepField(doc, index, "id", newId);
  // References follow only when this step is the one they resolved to, and the new id is a name.
  if (!old || firstWithOld !== index || !/^[A-Za-z_]\w*$/.test(old) || !/^[A-Za-z_]\w*$/.test(newId)) return next;
  const renamed = stepsOf(next).map((s) => renameStepDoc(s, old, newId));
  next = withKey(next, "steps", renamed);
  if (next.output !== undefined) next = withKey(next, "output", renameInValue(next.output, old, newId, false));
  return next;
}

export interface Connection {
  /** `steps` (a step's output) or `input` (the pattern's input). */
  ref: Ref;
  /** The step receiving the value, or "output" for the output mapping. */
  target: { kind: "step"; index: number } | { kind: "output" };
  /** `with.owner_id`, `depends_on`, `when` … (a step) or `output.user_id` (output). */
  field: string;
}

/** Wires `ref` into a field: `with.x: "${{ steps.a.b }}"`, or a `depends_on` entry. */
export function connect(doc: PatternDoc, c: Connection): PatternDoc {
  if (c.target.kind === "output") {
    return setPatternField(doc, c.field, refExpression(c.ref));
  }
  const index = c.target.index;
  if (c.field === "depends_on") {
    if (c.ref.root !== "steps" || !c.ref.step) return doc;
    const step = stepsOf(doc)[index];
    const deps = isObj(step) && Array.isArray(step.depends_on) ? step.depends_on : [];
    if (deps.includes(c.ref.step)) return doc;
    return setStepField(doc, index, "depends_on", [...deps, c.ref.step]);
  }
  return setStepField(doc, index, c.field, refExpression(c.ref));
}

/** Removes what an edge stands for: the field it lands in, or the `depends_on` entry. */
export function disconnect(doc: PatternDoc, edge: GraphEdge, stepIndex: (nodeId: string) => number | undefined): PatternDoc {
  if (edge.target === "$output") return setPatternField(doc, edge.targetField, undefined);
  const index = stepIndex(edge.target);
  if (index === undefined) return doc;
  if (edge.kind === "depends_on") {
    const sourceIndex = stepIndex(edge.source);
    const source = sourceIndex === undefined ? undefined : stepsOf(doc)[sourceIndex];
    const id = isObj(source) ? source.id : undefined;
    const step = stepsOf(doc)[index];
    if (!isObj(step) || !Array.isArray(step.depends_on)) return doc;
    const deps = step.depends_on.filter((d) => d !== id);
    return setStepField(doc, index, "depends_on", deps.length ? deps : undefined);
  }
  return setStepField(doc, index, edge.targetField, undefined);
}

/** Whether an edge with this id is still implied by the document. */
export function hasEdge(doc: PatternDoc, id: string): boolean {
  return edgesOf(doc).some((e) => e.id === id);
}

/** The next patch version (`1.2.3` → `1.2.4`; anything else → `<v>.1` or `1.0.0`). */
export function nextPatch(v: string): string {
  const m = /^(\d+)\.(\d+)\.(\d+)(.*)$/.exec(v.trim());
  if (!m) return "1.0.0";
  return `${m[1]}.${m[2]}.${Number(m[3]) + 1}`;
}

/** Highest of semver strings (ignoring pre-release order subtleties). */
export function highestVersion(versions: string[]): string | undefined {
  const key = (v: string) => (/^(\d+)\.(\d+)\.(\d+)/.exec(v) ?? [v, "0", "0", "0"]).slice(1).map(Number);
  return [...versions].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
    return 0;
  }).pop();
}

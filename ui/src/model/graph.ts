// Document ↔ graph. A pattern document becomes one node per step (plus the pattern's input and
// output as nodes) and the edges its expressions imply: a data edge for every `steps.X.path` /
// `input.path` read (labelled with the path read and the field it lands in) and a `depends_on`
// edge per explicit dependency. The document stays the one truth: a step node carries its step
// object untouched, the rest of the document is kept as is (key order included), and the edges
// are a pure function of it — so document → graph → document is identical, and so is
// graph → document → graph.

import { refsInValue, type FieldRef, type Ref } from "./refs";
import type { Json, JsonObj, PatternDoc, StepDoc } from "./types";
import { isObj } from "./types";

export const INPUT_NODE = "$input";
export const OUTPUT_NODE = "$output";

export interface StepNode {
  kind: "step";
  /** Node id: `step:<id>` for the first step with that id, `step#<index>` otherwise. */
  id: string;
  /** Position in `steps`. */
  index: number;
  /** The step object exactly as in the document (shared, never copied). */
  step: Json;
}

export interface IoNode {
  kind: "input" | "output";
  id: typeof INPUT_NODE | typeof OUTPUT_NODE;
}

export type GraphNode = StepNode | IoNode;

export interface GraphEdge {
  /** Deterministic: `kind|source|sourcePath|target|targetField`. */
  id: string;
  kind: "data" | "depends_on";
  /** Node read from (a step node, or the input node). */
  source: string;
  /** Path read in the source's output (`user.id`); "" for the whole output. */
  sourcePath: string;
  /** Node the value lands in (a step node, or the output node). */
  target: string;
  /**
   * Field of the target, as a document path relative to it: `with.owner_id`, `when`, `for_each`,
   * `compensate.with.user_id`, `emit.data.email`, `emit.subject`, `wait_for.match`,
   * `wait_for.any[0].match`, `depends_on` (a step) or `output.user_id` (the output node).
   */
  targetField: string;
  label: string;
}

export interface PatternGraph {
  /** The document without `steps` (when `steps` is a list), key order kept. */
  header: JsonObj;
  /** Position of the `steps` key among the document's keys; -1 when it has none. */
  stepsAt: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** Node ids of the steps, in order (first of a duplicated id gets `step:<id>`). */
export function stepNodeIds(steps: readonly Json[]): string[] {
  const seen = new Set<string>();
  return steps.map((s, i) => {
    const id = isObj(s) && typeof s.id === "string" ? s.id : "";
    if (id && !seen.has(id)) {
      seen.add(id);
      return `step:${id}`;
    }
    return `step#${i}`;
  });
}

export function stepsOf(doc: PatternDoc): Json[] {
  return Array.isArray(doc.steps) ? doc.steps : [];
}

/** Every reference a step holds, by the field it is in. */
export function stepRefs(step: Json): FieldRef[] {
  const out: FieldRef[] = [];
  if (!isObj(step)) return out;
  refsInValue(step.with, "with", false, out);
  if (typeof step.when === "string") refsInValue(step.when, "when", true, out);
  if (typeof step.for_each === "string") refsInValue(step.for_each, "for_each", true, out);
  if (isObj(step.compensate)) refsInValue(step.compensate.with, "compensate.with", false, out);
  if (isObj(step.emit)) {
    refsInValue(step.emit.data, "emit.data", false, out);
    if (typeof step.emit.subject === "string") refsInValue(step.emit.subject, "emit.subject", false, out);
  }
  if (isObj(step.wait_for)) {
    const w = step.wait_for;
    if (typeof w.match === "string") refsInValue(w.match, "wait_for.match", true, out);
    if (Array.isArray(w.any)) {
      w.any.forEach((b, k) => {
        if (isObj(b) && typeof b.match === "string") refsInValue(b.match, `wait_for.any[${k}].match`, true, out);
      });
    }
  }
  return out;
}

function edgeLabel(sourcePath: string, targetField: string): string {
  return `${sourcePath || "·"} → ${targetField}`;
}

function edge(kind: GraphEdge["kind"], source: string, sourcePath: string, target: string, targetField: string): GraphEdge {
  return {
    id: `${kind}|${source}|${sourcePath}|${target}|${targetField}`,
    kind,
    source,
    sourcePath,
    target,
    targetField,
    label: kind === "depends_on" ? "depends on" : edgeLabel(sourcePath, targetField),
  };
}

/** The edges a document implies, deterministic and without duplicates. */
export function edgesOf(doc: PatternDoc): GraphEdge[] {
  const steps = stepsOf(doc);
  const ids = stepNodeIds(steps);
  const byStep = new Map<string, string>();
  steps.forEach((s, i) => {
    const id = isObj(s) && typeof s.id === "string" ? s.id : "";
    if (id && !byStep.has(id)) byStep.set(id, ids[i]);
  });
  const out: GraphEdge[] = [];
  const seen = new Set<string>();
  const push = (e: GraphEdge) => {
    if (!seen.has(e.id)) {
      seen.add(e.id);
      out.push(e);
    }
  };
  const source = (ref: Ref): string | undefined => (ref.root === "input" ? INPUT_NODE : byStep.get(ref.step ?? ""));
  steps.forEach((s, i) => {
    for (const { field, ref } of stepRefs(s)) {
      const from = source(ref);
      if (from) push(edge("data", from, ref.path, ids[i], field));
    }
    if (isObj(s) && Array.isArray(s.depends_on)) {
      for (const d of s.depends_on) {
        const from = typeof d === "string" ? byStep.get(d) : undefined;
        if (from) push(edge("depends_on", from, "", ids[i], "depends_on"));
      }
    }
  });
  const outRefs: FieldRef[] = [];
  refsInValue(doc.output, "output", false, outRefs);
  for (const { field, ref } of outRefs) {
    const from = source(ref);
    if (from) push(edge("data", from, ref.path, OUTPUT_NODE, field));
  }
  return out;
}

export function docToGraph(doc: PatternDoc): PatternGraph {
  const header: JsonObj = {};
  let stepsAt = -1;
  const keys = Object.keys(doc);
  const steps = Array.isArray(doc.steps) ? doc.steps : null;
  keys.forEach((k, i) => {
    if (k === "steps" && steps) stepsAt = i;
    else header[k] = doc[k];
  });
  const ids = stepNodeIds(steps ?? []);
  const nodes: GraphNode[] = [
    { kind: "input", id: INPUT_NODE },
    ...(steps ?? []).map((step, index): StepNode => ({ kind: "step", id: ids[index], index, step })),
    { kind: "output", id: OUTPUT_NODE },
  ];
  return { header, stepsAt, nodes, edges: edgesOf(doc) };
}

export function graphToDoc(graph: PatternGraph): PatternDoc {
  const steps = graph.nodes.filter((n): n is StepNode => n.kind === "step").map((n) => n.step);
  const doc: JsonObj = {};
  const keys = Object.keys(graph.header);
  let at = graph.stepsAt;
  if (at < 0 && steps.length > 0) {
    // Steps added to a document that had none: where the proto puts them (after `input`).
    const before = new Set(["name", "version", "description", "owner", "visibility", "durability", "timeout", "input"]);
    at = keys.findIndex((k) => !before.has(k));
    if (at < 0) at = keys.length;
  }
  keys.forEach((k, i) => {
    if (i === at) doc.steps = steps;
    if (k === "steps" && steps.length > 0) return; // a non-list `steps` replaced by real steps
    doc[k] = graph.header[k];
  });
  if (at >= keys.length) doc.steps = steps;
  return doc;
}

/** The step objects of a document whose ids are `stepNodeIds`, by node id. */
export function stepIndexByNode(doc: PatternDoc): Map<string, number> {
  const m = new Map<string, number>();
  stepNodeIds(stepsOf(doc)).forEach((id, i) => m.set(id, i));
  return m;
}

export type { StepDoc };

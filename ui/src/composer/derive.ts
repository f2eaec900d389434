// What the canvas draws, derived from the document, the catalog and the diagnostics: one node per
// step with its input fields as target handles and its output fields as source handles, the input
// and output nodes, and the edges the document's references imply (each on the handle of the
// field it reads and the field it lands in). Node data objects are reused while what they show is
// unchanged, so only the nodes an edit touches re-render.
import type { Edge, Node } from "@xyflow/react";
import { edgesOf, INPUT_NODE, OUTPUT_NODE, stepNodeIds, stepsOf, type GraphEdge } from "../model/graph";
import { isExpression } from "../model/refs";
import { schemaProperties, typeName } from "../model/schema";
import type { Json, JsonObj, PatternDoc } from "../model/types";
import { isObj } from "../model/types";
import type { Layout } from "../model/yaml";
import type { ActionInfo, Catalog } from "./catalog";
import { locate, type Diag } from "./validate";

export interface Row {
  /** Handle id: `i:<field>` (targets) or `o:<path>` (sources). */
  handle: string;
  /** The document path relative to the node (`with.owner_id`, `output.user_id`) or output path (`user.id`). */
  field: string;
  label: string;
  type: string;
  depth: number;
  /** Short text of the current value (targets). */
  value?: string;
  expr?: boolean;
  error?: string;
  warning?: string;
  /** Offset of the row from the top of its node (fixed geometry, see GEOMETRY). */
  top?: number;
}

export interface StepData extends Record<string, unknown> {
  index: number;
  stepId: string;
  kind: "call" | "emit" | "wait" | "empty";
  title: string;
  subtitle: string;
  badges: string[];
  inRows: Row[];
  outRows: Row[];
  /** Every diagnostic of the step, with the field it is on. */
  diags: Diag[];
  /** The diagnostics no row shows (listed on the node itself). */
  nodeDiags: Diag[];
  unknownAction: boolean;
  /** The node's exact height (every part has a fixed height). */
  height: number;
}

export interface IoData extends Record<string, unknown> {
  kind: "input" | "output";
  rows: Row[];
  diags: Diag[];
  nodeDiags: Diag[];
  height: number;
  /** Offset of the "+ new" row. */
  newTop: number;
}

export type StepFlowNode = Node<StepData, "step">;
export type IoFlowNode = Node<IoData, "io">;
export type FlowNode = StepFlowNode | IoFlowNode;

export const EVENT_FIELDS = ["id", "source", "type", "subject", "time", "data"];

export const CTL = "i:$ctl";
export const WHOLE = "o:";
export const NEW_INPUT = "o:$new";
export const NEW_OUTPUT = "i:$new";

/** Layout key of a node: the step id (`#3` for a step without a unique id), `$input`, `$output`. */
export function layoutKey(nodeId: string): string {
  if (nodeId.startsWith("step:")) return nodeId.slice(5);
  if (nodeId.startsWith("step#")) return `#${nodeId.slice(5)}`;
  return nodeId;
}

function short(v: Json | undefined): string {
  if (v === undefined) return "";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 39)}…` : s;
}

/** Whether `field` is `row` or below it (`with.a` covers `with.a.b`, `with.a[0]`). */
export function covers(row: string, field: string): boolean {
  return field === row || field.startsWith(`${row}.`) || field.startsWith(`${row}[`);
}

/** The row a path belongs to: exact, else the deepest row above it. */
export function rowFor<T extends { field: string }>(rows: T[], field: string): T | undefined {
  let best: T | undefined;
  for (const r of rows) if (covers(r.field, field) && (!best || r.field.length > best.field.length)) best = r;
  return best;
}

function getPath(v: Json | undefined, path: string): Json | undefined {
  let cur = v;
  for (const p of path.split(".")) {
    if (!isObj(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

/** Leaf paths of a template object (`a`, `b.c`), objects expanded up to `depth`. */
function objectPaths(v: Json | undefined, prefix: string, depth: number, out: string[]): void {
  if (!isObj(v)) return;
  for (const [k, x] of Object.entries(v)) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (isObj(x) && depth > 0 && Object.keys(x).length > 0) objectPaths(x, p, depth - 1, out);
    else out.push(p);
  }
}

function stepRows(step: JsonObj, action: ActionInfo | undefined): { inRows: Row[]; outRows: Row[] } {
  const inRows: Row[] = [];
  const outRows: Row[] = [];
  const addIn = (field: string, label: string, type: string, depth: number) => {
    const v = getPathDoc(step, field);
    inRows.push({ handle: `i:${field}`, field, label, type, depth, value: short(v), expr: isExpression(v) });
  };
  if (typeof step.when === "string") addIn("when", "when", "condition", 0);
  if (typeof step.for_each === "string") addIn("for_each", "for_each", "list", 0);
  if (isObj(step.emit)) {
    addIn("emit.subject", "subject", "string", 0);
    const paths: string[] = [];
    objectPaths(step.emit.data, "", 0, paths);
    for (const p of paths) addIn(`emit.data.${p}`, `data.${p}`, "any", 0);
    for (const f of EVENT_FIELDS) outRows.push({ handle: `o:${f}`, field: f, label: f, type: f === "data" ? "object" : "string", depth: 0 });
    return { inRows, outRows };
  }
  if (isObj(step.wait_for)) {
    const w = step.wait_for;
    if (typeof w.match === "string") addIn("wait_for.match", "match", "condition", 0);
    if (Array.isArray(w.any)) w.any.forEach((b, k) => isObj(b) && typeof b.match === "string" && addIn(`wait_for.any[${k}].match`, `any[${k}].match`, "condition", 0));
    for (const f of EVENT_FIELDS) outRows.push({ handle: `o:${f}`, field: f, label: f, type: f === "data" ? "object" : "string", depth: 0 });
    return { inRows, outRows };
  }
  const known = new Set<string>();
  if (action) {
    for (const f of action.inputFields) {
      if (f.depth > 1) continue;
      known.add(f.path);
      addIn(`with.${f.path}`, f.path, f.type, f.depth);
    }
    for (const f of action.outputFields) {
      if (f.depth > 2) continue;
      outRows.push({ handle: `o:${f.path}`, field: f.path, label: f.path, type: f.type, depth: f.depth });
    }
  }
  // Fields the document sets that the action does not declare (or an action the catalog lacks).
  const paths: string[] = [];
  objectPaths(step.with, "", 1, paths);
  for (const p of paths) {
    if (known.has(p) || [...known].some((k) => covers(k, p))) continue;
    addIn(`with.${p}`, p, "?", p.includes(".") ? 1 : 0);
  }
  return { inRows, outRows };
}

function getPathDoc(step: JsonObj, field: string): Json | undefined {
  const parts = field.split(/\.|\[(\d+)\]/).filter((x) => x !== undefined && x !== "");
  let cur: Json | undefined = step;
  for (const p of parts) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObj(cur)) cur = cur[p];
    else return undefined;
  }
  return cur;
}

function badges(step: JsonObj): string[] {
  const out: string[] = [];
  if (step.when !== undefined) out.push("when");
  if (step.for_each !== undefined) out.push(step.concurrency ? `for_each ×${String(step.concurrency)}` : "for_each");
  if (step.retry !== undefined) out.push(isObj(step.retry) && step.retry.max_attempts ? `retry ${String(step.retry.max_attempts)}` : "retry");
  if (step.timeout !== undefined) out.push(`timeout ${String(step.timeout)}`);
  if (step.compensate !== undefined) out.push("compensate");
  if (step.stream === true) out.push("stream");
  if (Array.isArray(step.depends_on) && step.depends_on.length) out.push(`after ${step.depends_on.join(", ")}`);
  return out;
}

function attachDiags(rows: Row[], diags: { field: string; d: Diag }[]): { rows: Row[]; rest: Diag[] } {
  if (diags.length === 0) return { rows, rest: [] };
  const rest: Diag[] = [];
  const byRow = new Map<Row, { error?: string; warning?: string }>();
  for (const { field, d } of diags) {
    const r = field ? rowFor(rows, field) : undefined;
    if (!r) {
      rest.push(d);
      continue;
    }
    const m = byRow.get(r) ?? {};
    if (d.severity === "error") m.error = m.error ? `${m.error}\n${d.message}` : d.message;
    else m.warning = m.warning ? `${m.warning}\n${d.message}` : d.message;
    byRow.set(r, m);
  }
  return { rows: rows.map((r) => (byRow.has(r) ? { ...r, ...byRow.get(r) } : r)), rest };
}

/**
 * Fixed geometry of the nodes (px), shared by the CSS (composer.css), the layout and the compact
 * rendering: every node's height and every handle's offset are known before it is rendered.
 */
export const GEOMETRY = {
  header: 22,
  title: 32,
  badges: 18,
  diagLine: 15,
  maxDiagLines: 3,
  listPad: 3,
  listBorder: 1,
  row: 20,
  value: 14,
  message: 28,
  handle: 10,
};

export function rowHeight(r: Row): number {
  const g = GEOMETRY;
  return g.row + (r.value ? g.value : 0) + (r.error || r.warning ? g.message : 0);
}

function diagLines(n: number): number {
  return n === 0 ? 0 : Math.min(n, GEOMETRY.maxDiagLines) + (n > GEOMETRY.maxDiagLines ? 1 : 0);
}

/** Sets each row's `top` from `start`; returns where the list ends. */
function placeRows(rows: Row[], start: number): { rows: Row[]; end: number } {
  if (rows.length === 0) return { rows, end: start };
  const g = GEOMETRY;
  let y = start + g.listBorder + g.listPad;
  const out = rows.map((r) => {
    const placed = r.top === y ? r : { ...r, top: y };
    y += rowHeight(r);
    return placed;
  });
  return { rows: out, end: y + g.listPad };
}

interface CacheEntry {
  step: Json;
  action: ActionInfo | undefined;
  index: number;
  diagKey: string;
  data: StepData;
}

/** Derives node data with reuse across calls (one instance per composer). */
export class Deriver {
  private steps = new Map<string, CacheEntry>();
  private io = new Map<string, { key: string; data: IoData }>();
  private nodes = new Map<string, FlowNode>();
  private edgeCache = new Map<string, Edge>();

  /** The edge object, reused while what it draws is the same (xyflow then skips it). */
  edge(e: Edge): Edge {
    const prev = this.edgeCache.get(e.id);
    if (
      prev &&
      prev.source === e.source &&
      prev.target === e.target &&
      prev.sourceHandle === e.sourceHandle &&
      prev.targetHandle === e.targetHandle &&
      prev.selected === e.selected &&
      prev.label === e.label &&
      prev.className === e.className &&
      prev.ariaLabel === e.ariaLabel
    )
      return prev;
    this.edgeCache.set(e.id, e);
    return e;
  }

  pruneEdges(ids: Set<string>): void {
    for (const k of [...this.edgeCache.keys()]) if (!ids.has(k)) this.edgeCache.delete(k);
  }

  stepData(nodeId: string, index: number, step: Json, action: ActionInfo | undefined, diags: Diag[]): StepData {
    const diagKey = diags.map((d) => `${d.severity}|${d.path}|${d.message}`).join("\n");
    const hit = this.steps.get(nodeId);
    if (hit && hit.step === step && hit.action === action && hit.index === index && hit.diagKey === diagKey) return hit.data;
    const s = isObj(step) ? step : {};
    const kind: StepData["kind"] = isObj(s.emit) ? "emit" : isObj(s.wait_for) ? "wait" : typeof s.call === "string" && s.call ? "call" : "empty";
    const call = typeof s.call === "string" ? s.call : "";
    let title = "";
    let subtitle = "";
    if (kind === "call") {
      title = call.split("/").pop() ?? call;
      subtitle = call.includes("/") ? call.split("/")[0] : "";
    } else if (kind === "emit") {
      title = `emit ${String(isObj(s.emit) ? (s.emit.type ?? "") : "")}`;
      subtitle = "publishes an event";
    } else if (kind === "wait") {
      const w = isObj(s.wait_for) ? s.wait_for : {};
      const events = Array.isArray(w.any) ? w.any.map((b) => (isObj(b) ? String(b.event ?? "") : "")).join(" | ") : String(w.event ?? "");
      title = `wait for ${events}`;
      subtitle = w.timeout ? `timeout ${String(w.timeout)}` : "waits for an event";
    } else {
      title = "no action";
      subtitle = "choose an action in the panel";
    }
    const rows = stepRows(s, kind === "call" ? action : undefined);
    const located = diags.map((d) => ({ field: locate(d.path).field ?? "", d }));
    const attached = attachDiags(rows.inRows, located);
    const g = GEOMETRY;
    const b = badges(s);
    let y = g.header + g.title + (b.length ? g.badges : 0) + diagLines(attached.rest.length) * g.diagLine;
    const ins = placeRows(attached.rows, y);
    y = ins.end;
    const outs = placeRows(rows.outRows, y);
    y = outs.end;
    const data: StepData = {
      index,
      stepId: typeof s.id === "string" ? s.id : "",
      kind,
      title,
      subtitle,
      badges: b,
      inRows: ins.rows,
      outRows: outs.rows,
      diags,
      nodeDiags: attached.rest,
      unknownAction: kind === "call" && !action,
      height: y + 2,
    };
    this.steps.set(nodeId, { step, action, index, diagKey, data });
    return data;
  }

  ioData(kind: "input" | "output", doc: PatternDoc, diags: Diag[]): IoData {
    const rows: Row[] = [];
    if (kind === "input") {
      const props = isObj(doc.input) && isObj(doc.input.properties) ? doc.input.properties : {};
      for (const p of schemaProperties(doc.input)) rows.push({ handle: `o:${p}`, field: p, label: p, type: typeName(props[p]), depth: 0 });
    } else {
      const paths: string[] = [];
      objectPaths(doc.output, "", 2, paths);
      for (const p of paths) {
        const v = getPath(doc.output, p);
        rows.push({ handle: `i:output.${p}`, field: `output.${p}`, label: p, type: "", depth: p.split(".").length - 1, value: short(v), expr: isExpression(v) });
      }
    }
    const key = JSON.stringify([rows, diags]);
    const hit = this.io.get(kind);
    if (hit && hit.key === key) return hit.data;
    const located = diags.map((d) => ({ field: d.path, d }));
    const attached = attachDiags(rows, located);
    const g = GEOMETRY;
    const placed = placeRows(attached.rows, g.header + g.title);
    const newTop = placed.rows.length ? placed.end - g.listPad : g.header + g.title + g.listBorder + g.listPad;
    const height = newTop + g.row + g.listPad + diagLines(attached.rest.length) * g.diagLine + 2;
    const data: IoData = { kind, rows: placed.rows, diags, nodeDiags: attached.rest, height, newTop };
    this.io.set(kind, { key, data });
    return data;
  }

  /** The node object, reused while data, position and selection are the same. */
  node(id: string, type: "step" | "io", data: StepData | IoData, position: { x: number; y: number }, selected: boolean, label: string): FlowNode {
    const prev = this.nodes.get(id);
    if (prev && prev.data === data && prev.position.x === position.x && prev.position.y === position.y && !!prev.selected === selected) return prev;
    const node = {
      id,
      type,
      data,
      position,
      selected,
      ariaLabel: label,
      deletable: type === "step",
      // Known before it renders (fixed geometry): visibility culling and bounds need no measure.
      initialWidth: type === "step" ? NODE_W : IO_WIDTH,
      initialHeight: data.height,
    } as FlowNode;
    this.nodes.set(id, node);
    return node;
  }

  prune(ids: Set<string>): void {
    for (const k of [...this.steps.keys()]) if (!ids.has(k)) this.steps.delete(k);
    for (const k of [...this.nodes.keys()]) if (!ids.has(k)) this.nodes.delete(k);
  }
}

export interface Derived {
  nodes: FlowNode[];
  edges: Edge[];
  graphEdges: GraphEdge[];
  /** Node id → step index. */
  stepIndex: Map<string, number>;
  /** Step index → node id. */
  nodeOfStep: string[];
  /** Layout keys with no position yet. */
  unplaced: string[];
}

const NODE_W = 260;
export const IO_WIDTH = 220;

/** Height of a node (exact: the geometry is fixed). */
export function nodeHeight(data: StepData | IoData): number {
  return data.height;
}
export const NODE_WIDTH = NODE_W;

export function derive(
  d: Deriver,
  doc: PatternDoc,
  layout: Layout,
  catalog: Catalog | null,
  diags: Diag[],
  selectedNode: string | null,
  selectedEdge: string | null,
  /** Zoomed out: nodes draw one handle a side, every edge attaches there. */
  compact = false,
  graphEdges: GraphEdge[] = edgesOf(doc),
): Derived {
  const steps = stepsOf(doc);
  const ids = stepNodeIds(steps);
  const byStep: Diag[][] = steps.map(() => []);
  const inputDiags: Diag[] = [];
  const outputDiags: Diag[] = [];
  for (const x of diags) {
    const loc = locate(x.path);
    if (loc.step !== undefined && byStep[loc.step]) byStep[loc.step].push(x);
    else if (loc.output) outputDiags.push(x);
    else if (loc.input) inputDiags.push(x);
  }
  const nodes: FlowNode[] = [];
  const unplaced: string[] = [];
  const pos = (id: string, fallback: [number, number]) => {
    const p = layout[layoutKey(id)];
    if (!p) unplaced.push(layoutKey(id));
    const [x, y] = p ?? fallback;
    return { x, y };
  };
  const inputData = d.ioData("input", doc, inputDiags);
  nodes.push(d.node(INPUT_NODE, "io", inputData, pos(INPUT_NODE, [0, 0]), selectedNode === INPUT_NODE, "Pattern input"));
  const stepIndex = new Map<string, number>();
  steps.forEach((s, i) => {
    stepIndex.set(ids[i], i);
    const call = isObj(s) && typeof s.call === "string" ? s.call : "";
    const data = d.stepData(ids[i], i, s, catalog?.byName.get(call), byStep[i]);
    const label = `Step ${data.stepId || `#${i + 1}`}: ${data.title}${data.diags.length ? `, ${data.diags.length} problem${data.diags.length > 1 ? "s" : ""}` : ""}`;
    nodes.push(d.node(ids[i], "step", data, pos(ids[i], [320 * (i + 1), 0]), selectedNode === ids[i], label));
  });
  const outputData = d.ioData("output", doc, outputDiags);
  nodes.push(d.node(OUTPUT_NODE, "io", outputData, pos(OUTPUT_NODE, [320 * (steps.length + 1), 0]), selectedNode === OUTPUT_NODE, "Pattern output"));
  d.prune(new Set(nodes.map((n) => n.id)));

  const rowsOf = new Map<string, { ins: Row[]; outs: Row[] }>();
  for (const n of nodes) {
    if (n.type === "step") rowsOf.set(n.id, { ins: n.data.inRows, outs: n.data.outRows });
    else rowsOf.set(n.id, n.data.kind === "input" ? { ins: [], outs: n.data.rows } : { ins: n.data.rows, outs: [] });
  }
  const many = graphEdges.length > 80;
  const edges: Edge[] = graphEdges.map((e) => {
    const src = rowsOf.get(e.source);
    const tgt = rowsOf.get(e.target);
    const srow = e.sourcePath ? src && rowFor(src.outs, e.sourcePath) : undefined;
    const trow = e.kind === "depends_on" ? undefined : tgt && rowFor(tgt.ins, e.targetField);
    const invalid = !!trow?.error;
    const selected = selectedEdge === e.id;
    return d.edge({
      id: e.id,
      source: e.source,
      target: e.target,
      sourceHandle: compact ? WHOLE : srow ? srow.handle : WHOLE,
      targetHandle: compact ? CTL : trow ? trow.handle : e.target === OUTPUT_NODE ? NEW_OUTPUT : CTL,
      selected,
      label: (!many && !compact) || selected ? e.label : undefined,
      ariaLabel: `${e.kind === "depends_on" ? "dependency" : "data"} edge ${e.label} from ${layoutKey(e.source)} to ${layoutKey(e.target)}`,
      className: [e.kind === "depends_on" ? "dep" : "data", invalid ? "invalid" : ""].join(" "),
      animated: false,
      data: { graph: e },
    } satisfies Edge);
  });
  d.pruneEdges(new Set(graphEdges.map((e) => e.id)));
  return { nodes, edges, graphEdges, stepIndex, nodeOfStep: ids, unplaced };
}

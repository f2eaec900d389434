// A READ-ONLY drawing of a pattern document: one node per step, an edge wherever a step reads
// another (`${{ steps.X… }}`) or names it in `depends_on`, laid out top-down with dagre. Optional
// per-step highlights (added / removed / changed) draw a version diff on the graph. The editable
// canvas is the composer's; this one only pans, zooms and reports clicks.
import dagre from "@dagrejs/dagre";
import {
  Background,
  BaseEdge,
  Controls,
  getBezierPath,
  MiniMap,
  Handle,
  MarkerType,
  Position,
  ReactFlow,
  ReactFlowProvider,
  type Edge,
  type EdgeProps,
  type Node,
  type NodeProps,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { memo, useLayoutEffect, useMemo, useRef, useState } from "react";
import type { Step } from "../gen/nexus/v1/nexus_pb";
import { stepEdges, type StepChange } from "./diff";
import "./pattern-graph.css";

const NODE_W = 220;
const NODE_H = 64;

export interface PatternGraphViewProps {
  /** The steps to draw (a pattern's `steps`, or the union of two versions' steps for a diff). */
  steps: readonly Step[];
  /** How each step changed, for a diff. Steps not in the map are drawn plainly. */
  highlight?: ReadonlyMap<string, StepChange>;
  /** Called with a step's id when its node is clicked (or Enter is pressed on it). */
  onStepClick?: (id: string) => void;
  /** The step to mark as selected. */
  selected?: string;
  /** Accessible name of the drawing. */
  label: string;
  height?: number;
}

interface StepNodeData extends Record<string, unknown> {
  step: Step;
  change?: StepChange;
  selected: boolean;
}

type StepNode = Node<StepNodeData, "step">;

/** What a step does, in a few words: `UserService/CreateUser`, `emit user.created`, `wait for …`. */
export function stepSummary(step: Step): string {
  if (step.call.startsWith("pattern:")) return step.call;
  if (step.call) {
    const slash = step.call.lastIndexOf("/");
    const service = step.call.slice(0, slash);
    return `${service.slice(service.lastIndexOf(".") + 1)}/${step.call.slice(slash + 1)}`;
  }
  if (step.emit) return `emit ${step.emit.type}`;
  if (step.waitFor) {
    const events = step.waitFor.event ? [step.waitFor.event] : step.waitFor.any.map((b) => b.event);
    return `wait for ${events.join(" | ")}`;
  }
  return "(no action)";
}

function stepFlags(step: Step): string[] {
  const flags: string[] = [];
  if (step.when) flags.push("when");
  if (step.forEach) flags.push("for each");
  if (step.stream) flags.push("stream");
  if (step.retry && step.retry.maxAttempts > 1) flags.push(`retry ×${step.retry.maxAttempts}`);
  if (step.compensate) flags.push("compensate");
  return flags;
}

const StepNodeView = memo(function StepNodeView({ data }: NodeProps<StepNode>) {
  const { step, change } = data;
  const flags = stepFlags(step);
  return (
    <div className="pg-node-body" title={step.call || undefined}>
      <Handle type="target" position={Position.Top} isConnectable={false} />
      <div className="pg-node-head">
        <span className="pg-node-id">{step.id}</span>
        {change && <span className={`pg-badge pg-badge-${change}`}>{change}</span>}
      </div>
      <div className="pg-node-call">{stepSummary(step)}</div>
      {flags.length > 0 && <div className="pg-node-flags">{flags.join(" · ")}</div>}
      <Handle type="source" position={Position.Bottom} isConnectable={false} />
    </div>
  );
});

const NODE_TYPES = { step: StepNodeView };

interface Point {
  x: number;
  y: number;
}

type RoutedEdge = Edge<{ points: Point[] }, "routed">;

/** A smooth path through `pts` (quadratic curves through the midpoints of the polyline). */
function smoothPath(pts: Point[]): string {
  if (pts.length < 2) return "";
  let d = `M ${pts[0].x},${pts[0].y}`;
  for (let i = 1; i < pts.length - 1; i++) {
    const mx = (pts[i].x + pts[i + 1].x) / 2;
    const my = (pts[i].y + pts[i + 1].y) / 2;
    d += ` Q ${pts[i].x},${pts[i].y} ${mx},${my}`;
  }
  const last = pts[pts.length - 1];
  return `${d} L ${last.x},${last.y}`;
}

/** An edge along the route dagre computed (around the nodes in between, unlike a straight step). */
function RoutedEdgeView({ sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition, data, markerEnd, style }: EdgeProps<RoutedEdge>) {
  const inner = (data?.points ?? []).slice(1, -1);
  const path =
    inner.length > 0
      ? smoothPath([{ x: sourceX, y: sourceY }, ...inner, { x: targetX, y: targetY }])
      : getBezierPath({ sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition })[0];
  return <BaseEdge path={path} markerEnd={markerEnd} style={style} />;
}

const EDGE_TYPES = { routed: RoutedEdgeView };

export interface GraphLayout {
  /** Top-left corner of each step's node. */
  nodes: Map<string, Point>;
  /** Dagre's route of each edge (`from>to`), node border to node border. */
  edges: Map<string, Point[]>;
}

/** Node positions and edge routes for `steps`, top-down. */
export function layoutSteps(steps: readonly Step[]): GraphLayout {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "TB", nodesep: 28, ranksep: 56, edgesep: 16, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const s of steps) g.setNode(s.id, { width: NODE_W, height: NODE_H });
  for (const e of stepEdges(steps)) g.setEdge(e.from, e.to);
  dagre.layout(g);
  const nodes = new Map<string, Point>();
  for (const s of steps) {
    const n = g.node(s.id);
    nodes.set(s.id, { x: (n?.x ?? 0) - NODE_W / 2, y: (n?.y ?? 0) - NODE_H / 2 });
  }
  const edges = new Map<string, Point[]>();
  for (const e of g.edges()) {
    const pts = g.edge(e)?.points;
    if (pts) edges.set(`${e.v}>${e.w}`, pts.map((p) => ({ x: p.x, y: p.y })));
  }
  return { nodes, edges };
}

function minimapColor(n: Node): string {
  const c = (n.data as StepNodeData).change;
  return c === "added" ? "#1e7b34" : c === "removed" ? "#b3261e" : c === "changed" ? "#c98a00" : "#9aa3b5";
}

export function PatternGraphView(props: PatternGraphViewProps) {
  return (
    <ReactFlowProvider>
      <Inner {...props} />
    </ReactFlowProvider>
  );
}

function Inner({ steps, highlight, onStepClick, selected, label, height = 380 }: PatternGraphViewProps) {
  const layout = useMemo(() => layoutSteps(steps), [steps]);
  const edgesOf = useMemo(() => stepEdges(steps), [steps]);

  const nodes: StepNode[] = useMemo(
    () =>
      steps.map((step) => {
        const change = highlight?.get(step.id);
        const isSelected = selected === step.id;
        return {
          id: step.id,
          type: "step" as const,
          position: layout.nodes.get(step.id) ?? { x: 0, y: 0 },
          data: { step, change, selected: isSelected },
          className: ["pg-node", change ? `pg-${change}` : "", isSelected ? "pg-selected" : ""].filter(Boolean).join(" "),
          ariaLabel: `Step ${step.id}: ${stepSummary(step)}${change ? ` (${change})` : ""}`,
          domAttributes: { "data-testid": `step-node-${step.id}`, "data-change": change ?? "none" } as Node["domAttributes"],
          width: NODE_W,
          height: NODE_H,
          draggable: false,
          connectable: false,
          selectable: Boolean(onStepClick),
          focusable: Boolean(onStepClick),
        };
      }),
    [steps, layout, highlight, selected, onStepClick],
  );

  const edges: RoutedEdge[] = useMemo(
    () =>
      edgesOf.map((e) => {
        const gone = highlight?.get(e.from) === "removed" || highlight?.get(e.to) === "removed";
        const added = highlight?.get(e.to) === "added" || highlight?.get(e.from) === "added";
        return {
          id: `${e.from}>${e.to}`,
          source: e.from,
          target: e.to,
          type: "routed" as const,
          data: { points: layout.edges.get(`${e.from}>${e.to}`) ?? [] },
          className: ["pg-edge", `pg-edge-${e.kind}`, gone ? "pg-edge-removed" : "", added ? "pg-edge-added" : ""]
            .filter(Boolean)
            .join(" "),
          markerEnd: { type: MarkerType.ArrowClosed, width: 16, height: 16, color: gone ? "#b3261e" : added ? "#1e7b34" : "#7d879b" },
          ariaLabel: `${e.to} ${e.kind === "order" ? "runs after" : "reads"} ${e.from}`,
          focusable: false,
          selectable: false,
        };
      }),
    [edgesOf, highlight, layout],
  );

  // A big graph fitted whole is unreadable: it opens at a readable zoom on its first steps, with a
  // minimap to roam.
  const big = steps.length > 40;
  const box = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState<number | null>(null);
  useLayoutEffect(() => {
    if (big && box.current) setWidth(box.current.clientWidth);
  }, [big]);
  const startViewport = useMemo(() => {
    if (!big || width === null) return undefined;
    // Centred on the first step (the top-most, then left-most).
    const first = [...layout.nodes.values()].sort((a, b) => a.y - b.y || a.x - b.x)[0] ?? { x: 0, y: 0 };
    const zoom = 0.75;
    return { x: width / 2 - (first.x + NODE_W / 2) * zoom, y: 16 - first.y * zoom, zoom };
  }, [big, width, layout]);

  if (steps.length === 0) {
    return (
      <div className="pg-empty muted" style={{ height: 80 }}>
        This pattern has no steps.
      </div>
    );
  }
  return (
    <div
      className="pattern-graph"
      ref={box}
      style={{ height }}
      onKeyDown={
        onStepClick
          ? (e) => {
              if (e.key !== "Enter" && e.key !== " ") return;
              const id = (e.target as HTMLElement).closest?.(".react-flow__node")?.getAttribute("data-id");
              if (id) onStepClick(id);
            }
          : undefined
      }
    >
      {(!big || startViewport) && (
      <ReactFlow
        aria-label={label}
        nodes={nodes}
        edges={edges}
        nodeTypes={NODE_TYPES}
        edgeTypes={EDGE_TYPES}
        fitView={!big}
        fitViewOptions={{ padding: 0.12, maxZoom: 1.1 }}
        defaultViewport={startViewport}
        minZoom={0.05}
        maxZoom={2}
        nodesDraggable={false}
        nodesConnectable={false}
        elementsSelectable={Boolean(onStepClick)}
        nodesFocusable={Boolean(onStepClick)}
        edgesFocusable={false}
        zoomOnScroll={false}
        preventScrolling={false}
        zoomOnDoubleClick={false}
        onlyRenderVisibleElements={steps.length > 80}
        onNodeClick={onStepClick ? (_e, n) => onStepClick(n.id) : undefined}
        proOptions={{ hideAttribution: true }}
      >
        <Background gap={24} size={1} />
        <Controls showInteractive={false} position="bottom-right" />
        {big && <MiniMap pannable zoomable ariaLabel={`Overview of ${label}`} position="top-right" nodeColor={minimapColor} />}
      </ReactFlow>
      )}
    </div>
  );
}

export default PatternGraphView;

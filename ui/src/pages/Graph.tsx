// The knowledge graph (QueryGraph): impact of an action or event type (`#/graph?impact=X`),
// lineage of a pattern (`#/graph?lineage=NAME`), neighbourhood of a node
// (`#/graph?neighbourhood=ID&depth=N`). Drawn with @xyflow/react laid out by dagre, and listed
// as tables (the accessible view, and the one that stays fast on very large answers).
import dagre from "@dagrejs/dagre";
import {
  Background,
  Controls,
  Handle,
  MarkerType,
  Position,
  ReactFlow,
  type Edge,
  type Node,
  type NodeProps,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useEffect, useId, useMemo, useState, type FormEvent } from "react";
import { errorText, nexus } from "../api";
import type { GraphEdge, GraphNode, QueryGraphResponse } from "../gen/nexus/v1/nexus_pb";
import { href, navigate, type Route } from "../router";
import "./graph.css";

type QueryKind = "impact" | "lineage" | "neighbourhood";

interface GraphQuery {
  kind: QueryKind;
  target: string;
  depth: number;
}

const KINDS: { kind: QueryKind; label: string; what: string; placeholder: string }[] = [
  {
    kind: "impact",
    label: "Impact",
    what: "Pattern versions that use an action (directly or through sub-patterns), or that an event type triggers, resumes or is emitted by.",
    placeholder: "demo.user.v1.UserService/CreateUser or user.created",
  },
  { kind: "lineage", label: "Lineage", what: "The fork tree of a pattern: its root source and every fork below it.", placeholder: "user_creation" },
  {
    kind: "neighbourhood",
    label: "Neighbourhood",
    what: "Every node within 1 to 3 edges of a node.",
    placeholder: "pattern:user_creation@1.0.0",
  },
];

/** Above this many nodes the answer is listed, and drawn only on request (dagre takes about a second there). */
const DRAW_LIMIT = 500;
/** Rows of each table shown before "Show all". */
const TABLE_LIMIT = 500;

export function queryOf(q: URLSearchParams): GraphQuery | null {
  for (const kind of ["impact", "lineage", "neighbourhood"] as const) {
    const target = q.get(kind);
    if (target) {
      const depth = Math.min(3, Math.max(1, Number(q.get("depth")) || 1));
      return { kind, target, depth };
    }
  }
  return null;
}

function queryHref(g: GraphQuery): string {
  const q = new URLSearchParams({ [g.kind]: g.target });
  if (g.kind === "neighbourhood") q.set("depth", String(g.depth));
  return `${href("graph")}?${q.toString()}`;
}

const KIND_LABEL: Record<string, string> = {
  pattern_version: "pattern",
  action: "action",
  service: "service",
  event: "event",
  owner: "owner",
};

const kindLabel = (k: string) => KIND_LABEL[k] ?? k;
const plural = (n: number, what: string) => `${n.toLocaleString()} ${what}${n === 1 ? "" : "s"}`;

/** `pattern:NAME@VERSION` → NAME. */
export function patternName(id: string): string | null {
  if (!id.startsWith("pattern:")) return null;
  const rest = id.slice("pattern:".length);
  const at = rest.lastIndexOf("@");
  return at < 0 ? rest : rest.slice(0, at);
}

/** Where a node leads: a pattern to the marketplace, an action to the catalog. */
function nodeHref(n: GraphNode): string | null {
  const name = patternName(n.id);
  if (name) return href("marketplace", name);
  if (n.id.startsWith("action:")) return href("catalog", n.id.slice("action:".length));
  return null;
}

interface NodeData extends Record<string, unknown> {
  node: GraphNode;
  start: boolean;
}

function GraphNodeView({ data }: NodeProps<Node<NodeData>>) {
  const n = data.node;
  return (
    <div className={`gn gn-${n.kind}${n.deprecated ? " gn-deprecated" : ""}${data.start ? " gn-start" : ""}`} title={n.id}>
      <Handle type="target" position={Position.Left} isConnectable={false} />
      <span className="gn-kind">{kindLabel(n.kind)}</span>
      <span className="gn-label">{n.label || n.id}</span>
      {n.deprecated && <span className="gn-tag">deprecated</span>}
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
}

const nodeTypes = { graph: GraphNodeView };

function nodeWidth(n: GraphNode): number {
  return Math.min(440, Math.max(140, 28 + 7.6 * (n.label || n.id).length));
}
const NODE_HEIGHT = 52;

/** Positions by dagre, left to right (edges point from the dependent to what it depends on). */
export function layout(
  nodes: GraphNode[],
  edges: GraphEdge[],
  start: string | null,
): { nodes: Node<NodeData>[]; edges: Edge[]; height: number } {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 90, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(nodes.map((n) => n.id));
  for (const n of nodes) g.setNode(n.id, { width: nodeWidth(n), height: NODE_HEIGHT });
  edges.forEach((e, i) => {
    if (ids.has(e.from) && ids.has(e.to)) g.setEdge(e.from, e.to, { width: 60, height: 14 }, String(i));
  });
  dagre.layout(g);
  return {
    height: g.graph().height ?? 0,
    nodes: nodes.map((n) => {
      const p = g.node(n.id);
      const w = nodeWidth(n);
      return {
        id: n.id,
        type: "graph",
        position: { x: (p?.x ?? 0) - w / 2, y: (p?.y ?? 0) - NODE_HEIGHT / 2 },
        data: { node: n, start: n.id === start },
        style: { width: w },
        connectable: false,
        ariaLabel: `${kindLabel(n.kind)} ${n.label || n.id}${n.deprecated ? ", deprecated" : ""}`,
      };
    }),
    edges: edges
      .filter((e) => ids.has(e.from) && ids.has(e.to))
      .map((e, i) => ({
        id: `e${i}`,
        source: e.from,
        target: e.to,
        label: e.kind,
        markerEnd: { type: MarkerType.ArrowClosed, width: 16, height: 16 },
        className: `ge ge-${e.kind.toLowerCase()}`,
        labelBgPadding: [4, 2] as [number, number],
        labelBgBorderRadius: 3,
      })),
  };
}

/** The node a query starts from, to highlight it. */
function startNode(q: GraphQuery, nodes: GraphNode[]): string | null {
  if (q.kind === "neighbourhood") return q.target;
  if (q.kind === "impact") {
    const t = q.target;
    const id = t.startsWith("action:") || t.startsWith("event:") ? t : t.includes("/") ? `action:${t}` : `event:${t}`;
    return nodes.some((n) => n.id === id) ? id : null;
  }
  return nodes.find((n) => patternName(n.id) === q.target)?.id ?? null;
}

function GraphCanvas({ data, query }: { data: QueryGraphResponse; query: GraphQuery }) {
  const laid = useMemo(() => layout(data.nodes, data.edges, startNode(query, data.nodes)), [data, query]);
  return (
    <div
      className="graph-canvas"
      role="region"
      aria-label="Graph drawing (the same answer is listed in the tables below)"
      style={{ height: Math.min(560, Math.max(260, laid.height + 90)) }}
    >
      <ReactFlow
        nodes={laid.nodes}
        edges={laid.edges}
        nodeTypes={nodeTypes}
        fitView
        fitViewOptions={{ padding: 0.15, maxZoom: 1.2 }}
        minZoom={0.05}
        nodesConnectable={false}
        edgesFocusable={false}
        onlyRenderVisibleElements={laid.nodes.length > 200}
        onNodeClick={(_, n) => {
          const to = nodeHref((n.data as NodeData).node);
          if (to) navigate(to);
        }}
      >
        <Background gap={20} />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}

function NodeTable({ nodes, onExplore }: { nodes: GraphNode[]; onExplore(id: string): void }) {
  const [all, setAll] = useState(false);
  const shown = all ? nodes : nodes.slice(0, TABLE_LIMIT);
  return (
    <>
      <table className="graph-table">
        <caption>Nodes ({nodes.length.toLocaleString()})</caption>
        <thead>
          <tr>
            <th scope="col">Kind</th>
            <th scope="col">Node</th>
            <th scope="col">Id</th>
            <th scope="col">Explore</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((n) => {
            const to = nodeHref(n);
            return (
              <tr key={n.id}>
                <td>
                  <span className={`gk gk-${n.kind}`}>{kindLabel(n.kind)}</span>
                </td>
                <td>
                  {to ? <a href={to}>{n.label || n.id}</a> : n.label || n.id}
                  {n.deprecated && <span className="gn-tag"> deprecated</span>}
                </td>
                <td>
                  <code>{n.id}</code>
                </td>
                <td>
                  <button type="button" onClick={() => onExplore(n.id)} aria-label={`Neighbourhood of ${n.id}`}>
                    Neighbourhood
                  </button>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {!all && nodes.length > TABLE_LIMIT && (
        <button type="button" onClick={() => setAll(true)}>
          Show all {nodes.length.toLocaleString()} nodes
        </button>
      )}
    </>
  );
}

function EdgeTable({ edges, labels }: { edges: GraphEdge[]; labels: Map<string, string> }) {
  const [all, setAll] = useState(false);
  const shown = all ? edges : edges.slice(0, TABLE_LIMIT);
  if (edges.length === 0) return <p className="muted">No edges.</p>;
  return (
    <>
      <table className="graph-table">
        <caption>Edges ({edges.length.toLocaleString()})</caption>
        <thead>
          <tr>
            <th scope="col">From</th>
            <th scope="col">Edge</th>
            <th scope="col">To</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((e, i) => (
            <tr key={i}>
              <td>{labels.get(e.from) ?? e.from}</td>
              <td>
                <code>{e.kind}</code>
              </td>
              <td>{labels.get(e.to) ?? e.to}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {!all && edges.length > TABLE_LIMIT && (
        <button type="button" onClick={() => setAll(true)}>
          Show all {edges.length.toLocaleString()} edges
        </button>
      )}
    </>
  );
}

function useSuggestions(): { actions: string[]; events: string[]; patterns: { name: string; version: string }[] } {
  const [actions, setActions] = useState<string[]>([]);
  const [events, setEvents] = useState<string[]>([]);
  const [patterns, setPatterns] = useState<{ name: string; version: string }[]>([]);
  useEffect(() => {
    nexus
      .listServices({})
      .then((r) => setActions(r.services.flatMap((s) => s.actions.map((a) => a.name)).sort()))
      .catch(() => {});
    nexus
      .listEventTypes({})
      .then((r) => setEvents(r.eventTypes.map((t) => t.type)))
      .catch(() => {});
    nexus
      .listPatterns({ pageSize: 200 })
      .then((r) => setPatterns(r.patterns.map((p) => ({ name: p.name, version: p.version }))))
      .catch(() => {});
  }, []);
  return { actions, events, patterns };
}

export default function Graph({ route }: { route: Route }) {
  const current = queryOf(route.query);
  const key = current ? queryHref(current) : "";
  const ids = useId();
  const [kind, setKind] = useState<QueryKind>(current?.kind ?? "impact");
  const [target, setTarget] = useState(current?.target ?? "");
  const [depth, setDepth] = useState(current?.depth ?? 1);
  const [data, setData] = useState<QueryGraphResponse | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [drawLarge, setDrawLarge] = useState(false);
  const suggest = useSuggestions();

  useEffect(() => {
    if (!current) {
      setData(null);
      setError(null);
      return;
    }
    setKind(current.kind);
    setTarget(current.target);
    setDepth(current.depth);
    setDrawLarge(false);
    const ac = new AbortController();
    setLoading(true);
    setError(null);
    nexus
      .queryGraph({ query: { case: current.kind, value: current.target }, depth: current.kind === "neighbourhood" ? current.depth : 0 }, { signal: ac.signal })
      .then((r) => setData(r))
      .catch((err) => {
        if (!ac.signal.aborted) {
          setData(null);
          setError(errorText(err));
        }
      })
      .finally(() => {
        if (!ac.signal.aborted) setLoading(false);
      });
    return () => ac.abort();
    // `key` is the query; `current` is rebuilt on every render.
  }, [key]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const t = target.trim();
    if (!t) return;
    navigate(queryHref({ kind, target: t, depth }));
  };

  const labels = useMemo(() => new Map((data?.nodes ?? []).map((n) => [n.id, n.label || n.id])), [data]);
  const options =
    kind === "impact"
      ? [...suggest.actions, ...suggest.events]
      : kind === "lineage"
        ? suggest.patterns.map((p) => p.name)
        : [
            ...suggest.patterns.map((p) => `pattern:${p.name}@${p.version}`),
            ...suggest.actions.map((a) => `action:${a}`),
            ...[...new Set(suggest.actions.map((a) => a.split("/")[0]))].map((s) => `service:${s}`),
            ...suggest.events.map((t) => `event:${t}`),
          ];
  const meta = KINDS.find((k) => k.kind === kind)!;
  const tooBig = !!data && data.nodes.length > DRAW_LIMIT && !drawLarge;

  return (
    <section className="graph-page">
      <h1>Graph</h1>
      <form className="graph-form" onSubmit={submit} aria-label="Graph query">
        <fieldset className="graph-kinds">
          <legend>Query</legend>
          {KINDS.map((k) => (
            <label key={k.kind}>
              <input type="radio" name={`${ids}-kind`} value={k.kind} checked={kind === k.kind} onChange={() => setKind(k.kind)} /> {k.label}
            </label>
          ))}
        </fieldset>
        <div className="graph-target">
          <label htmlFor={`${ids}-target`}>
            {kind === "impact" ? "Action or event type" : kind === "lineage" ? "Pattern" : "Node id"}
          </label>
          <input
            id={`${ids}-target`}
            list={`${ids}-options`}
            value={target}
            onChange={(e) => setTarget(e.target.value)}
            placeholder={meta.placeholder}
            aria-describedby={`${ids}-what`}
            required
          />
          <datalist id={`${ids}-options`}>
            {options.map((o) => (
              <option key={o} value={o} />
            ))}
          </datalist>
        </div>
        {kind === "neighbourhood" && (
          <div className="graph-depth">
            <label htmlFor={`${ids}-depth`}>Depth</label>
            <select id={`${ids}-depth`} value={depth} onChange={(e) => setDepth(Number(e.target.value))}>
              <option value={1}>1</option>
              <option value={2}>2</option>
              <option value={3}>3</option>
            </select>
          </div>
        )}
        <button type="submit" className="primary">
          Show
        </button>
        <p className="muted graph-what" id={`${ids}-what`}>
          {meta.what}
        </p>
      </form>

      {!current && (
        <div className="graph-empty panel">
          <p>Ask the knowledge graph what depends on what. For example:</p>
          <ul>
            <li>
              <a href={queryHref({ kind: "impact", target: "demo.user.v1.UserService/CreateUser", depth: 1 })}>
                What breaks if <code>demo.user.v1.UserService/CreateUser</code> changes
              </a>
            </li>
            <li>
              <a href={queryHref({ kind: "impact", target: "user.created", depth: 1 })}>
                Which patterns the event <code>user.created</code> triggers, resumes or is emitted by
              </a>
            </li>
            <li>
              <a href={queryHref({ kind: "lineage", target: "user_creation", depth: 1 })}>
                The fork tree of <code>user_creation</code>
              </a>
            </li>
          </ul>
        </div>
      )}
      {loading && <p className="muted">Querying…</p>}
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {current && data && !loading && (
        <>
          <p className="graph-summary" role="status">
            {current.kind === "impact" && (
              <>
                Impact of <code>{current.target}</code>:{" "}
              </>
            )}
            {current.kind === "lineage" && (
              <>
                Lineage of <code>{current.target}</code>:{" "}
              </>
            )}
            {current.kind === "neighbourhood" && (
              <>
                Within {current.depth} edge{current.depth === 1 ? "" : "s"} of <code>{current.target}</code>:{" "}
              </>
            )}
            {plural(data.nodes.filter((n) => n.kind === "pattern_version").length, "pattern version")},{" "}
            {plural(data.nodes.length, "node")}, {plural(data.edges.length, "edge")}.
          </p>
          {data.nodes.length === 0 ? (
            <p className="muted graph-empty panel">Nothing: no node matches (or none you may see).</p>
          ) : (
            <>
              <ul className="graph-legend" aria-label="Node kinds">
                {["pattern_version", "action", "service", "event", "owner"].map((k) => (
                  <li key={k}>
                    <span className={`gk gk-${k}`}>{kindLabel(k)}</span>
                  </li>
                ))}
                <li>
                  <span className="gk gn-deprecated">deprecated</span>
                </li>
                <li className="muted">Click a pattern to open it in the marketplace.</li>
              </ul>
              {tooBig ? (
                <p className="panel">
                  {data.nodes.length.toLocaleString()} nodes: listed below.{" "}
                  <button type="button" onClick={() => setDrawLarge(true)}>
                    Draw anyway
                  </button>
                </p>
              ) : (
                <GraphCanvas data={data} query={current} />
              )}
              <div className="graph-tables">
                <NodeTable nodes={data.nodes} onExplore={(id) => navigate(queryHref({ kind: "neighbourhood", target: id, depth: 1 }))} />
                <EdgeTable edges={data.edges} labels={labels} />
              </div>
            </>
          )}
        </>
      )}
    </section>
  );
}

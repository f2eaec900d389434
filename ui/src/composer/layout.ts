// Automatic layout, left to right along the data flow. Dagre (network simplex ranking, crossing
// minimisation) for graphs of ordinary size; for big graphs opened without positions, a linear
// layered layout (longest-path ranks, one barycentre pass) so a 300-step pattern opens at once —
// dagre needs seconds there. The pattern's input goes left of everything, its output right.
import dagre from "@dagrejs/dagre";
import type { Layout } from "../model/yaml";

export interface LayoutNode {
  key: string;
  width: number;
  height: number;
}

export interface LayoutEdge {
  from: string;
  to: string;
}

/** Above this many nodes, opening uses the linear layout (the button still runs dagre). */
export const DAGRE_MAX_ON_OPEN = 120;

const NODESEP = 28;
const RANKSEP = 90;

/** Places `first` left of and `last` right of the others, centred vertically. */
function placeEnds(out: Layout, nodes: LayoutNode[], first: string, last: string): void {
  const inner = nodes.filter((n) => n.key !== first && n.key !== last && out[n.key]);
  const size = new Map(nodes.map((n) => [n.key, n]));
  let minX = 0;
  let maxX = 0;
  let minY = 0;
  let maxY = 0;
  inner.forEach((n, i) => {
    const [x, y] = out[n.key];
    if (i === 0 || x < minX) minX = x;
    if (i === 0 || x + n.width > maxX) maxX = x + n.width;
    if (i === 0 || y < minY) minY = y;
    if (i === 0 || y + n.height > maxY) maxY = y + n.height;
  });
  const mid = (minY + maxY) / 2;
  const f = size.get(first);
  const l = size.get(last);
  if (f) out[first] = [Math.round(minX - RANKSEP - f.width), Math.round(mid - f.height / 2)];
  if (l) out[last] = [Math.round(maxX + RANKSEP), Math.round(mid - l.height / 2)];
}

/** Dagre over the steps (edges from the input / to the output left out: they span every rank). */
export function dagreLayout(nodes: LayoutNode[], edges: LayoutEdge[], first: string, last: string): Layout {
  const g = new dagre.graphlib.Graph({ multigraph: false });
  const big = nodes.length > DAGRE_MAX_ON_OPEN;
  g.setGraph({ rankdir: "LR", nodesep: NODESEP, ranksep: RANKSEP, marginx: 20, marginy: 20, ranker: big ? "longest-path" : "network-simplex" });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) if (n.key !== first && n.key !== last) g.setNode(n.key, { width: n.width, height: n.height });
  for (const e of edges) if (e.from !== e.to && g.hasNode(e.from) && g.hasNode(e.to)) g.setEdge(e.from, e.to);
  dagre.layout(g);
  const out: Layout = {};
  for (const n of nodes) {
    const p = g.hasNode(n.key) ? g.node(n.key) : undefined;
    if (p) out[n.key] = [Math.round(p.x - n.width / 2), Math.round(p.y - n.height / 2)];
  }
  placeEnds(out, nodes, first, last);
  if (!out[first]) out[first] = [0, 0];
  if (!out[last]) out[last] = [400, 0];
  return out;
}

/** Linear-time layered layout: ranks by longest path, order by the predecessors' average. */
export function layeredLayout(nodes: LayoutNode[], edges: LayoutEdge[], first: string, last: string): Layout {
  const inner = nodes.filter((n) => n.key !== first && n.key !== last);
  const index = new Map(inner.map((n, i) => [n.key, i]));
  const preds: number[][] = inner.map(() => []);
  const succs: number[][] = inner.map(() => []);
  for (const e of edges) {
    const a = index.get(e.from);
    const b = index.get(e.to);
    if (a === undefined || b === undefined || a === b) continue;
    preds[b].push(a);
    succs[a].push(b);
  }
  // Kahn's order; whatever a cycle leaves behind is taken in document order.
  const indeg = preds.map((p) => p.length);
  const queue: number[] = [];
  indeg.forEach((d, i) => d === 0 && queue.push(i));
  const rank = new Array<number>(inner.length).fill(0);
  const done = new Array<boolean>(inner.length).fill(false);
  let head = 0;
  let next = 0;
  while (head < queue.length || next < inner.length) {
    if (head >= queue.length) {
      while (next < inner.length && done[next]) next++;
      if (next >= inner.length) break;
      queue.push(next);
      indeg[next] = 0;
    }
    const v = queue[head++];
    if (done[v]) continue;
    done[v] = true;
    for (const w of succs[v]) {
      if (done[w]) continue;
      rank[w] = Math.max(rank[w], rank[v] + 1);
      if (--indeg[w] === 0) queue.push(w);
    }
  }
  const ranks: number[][] = [];
  inner.forEach((_, i) => (ranks[rank[i]] ??= []).push(i));
  const pos = new Array<number>(inner.length).fill(0);
  ranks.forEach((r) => r?.forEach((v, k) => (pos[v] = k)));
  // One barycentre sweep: each rank ordered by where its predecessors are.
  for (const r of ranks) {
    if (!r) continue;
    const bc = (v: number) => (preds[v].length ? preds[v].reduce((s, p) => s + pos[p], 0) / preds[v].length : pos[v]);
    const keyed = r.map((v) => [bc(v), v] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    keyed.forEach(([, v], k) => {
      r[k] = v;
      pos[v] = k;
    });
  }
  const out: Layout = {};
  let x = 0;
  for (const r of ranks) {
    if (!r) continue;
    const width = Math.max(...r.map((v) => inner[v].width));
    const height = r.reduce((s, v) => s + inner[v].height, 0) + NODESEP * (r.length - 1);
    let y = -height / 2;
    for (const v of r) {
      out[inner[v].key] = [Math.round(x), Math.round(y)];
      y += inner[v].height + NODESEP;
    }
    x += width + RANKSEP;
  }
  placeEnds(out, nodes, first, last);
  if (!out[first]) out[first] = [0, 0];
  if (!out[last]) out[last] = [400, 0];
  return out;
}

/** The layout of a graph: dagre, or the linear layout for a big graph being opened. */
export function autoLayout(nodes: LayoutNode[], edges: LayoutEdge[], first: string, last: string, opening = false): Layout {
  return opening && nodes.length > DAGRE_MAX_ON_OPEN ? layeredLayout(nodes, edges, first, last) : dagreLayout(nodes, edges, first, last);
}

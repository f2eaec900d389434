// The xyflow canvas, apart from the rest of the composer so that dragging (a state change per
// frame) re-renders this component and the moved nodes only — never the forms, the YAML or the
// palette. Nodes keep their object while unchanged (xyflow then skips them).
import {
  applyNodeChanges,
  Background,
  Controls,
  ReactFlow,
  type Connection,
  type Edge,
  type EdgeChange,
  type NodeChange,
} from "@xyflow/react";
import { memo, useCallback, useLayoutEffect, useState } from "react";
import type { Layout } from "../model/yaml";
import { layoutKey, type FlowNode } from "./derive";
import { nodeTypes } from "./nodes";

export interface CanvasProps {
  nodes: FlowNode[];
  edges: Edge[];
  minZoom: number;
  /** Cull nodes outside the viewport (big graphs). */
  cull: boolean;
  onSelectNode: (id: string, selected: boolean) => void;
  onSelectEdge: (id: string, selected: boolean) => void;
  /** Nodes dropped at a new position (end of a drag, or moved with the arrow keys). */
  onMoved: (moved: Layout) => void;
  onConnect: (c: Connection) => void;
  isValidConnection: (c: Connection | Edge) => boolean;
}

export const Canvas = memo(function Canvas(props: CanvasProps) {
  const { onSelectNode, onSelectEdge, onMoved } = props;
  const [nodes, setNodes] = useState<FlowNode[]>(props.nodes);
  useLayoutEffect(() => {
    setNodes((prev) => {
      const byId = new Map(prev.map((n) => [n.id, n]));
      return props.nodes.map((n) => {
        const p = byId.get(n.id);
        if (!p) return n;
        if (p.dragging) return { ...n, position: p.position, dragging: true, measured: p.measured } as FlowNode;
        if (p.data === n.data && p.selected === n.selected && p.position.x === n.position.x && p.position.y === n.position.y) return p;
        return { ...n, measured: p.measured } as FlowNode;
      });
    });
  }, [props.nodes]);

  const onNodesChange = useCallback(
    (changes: NodeChange<FlowNode>[]) => {
      const rest: NodeChange<FlowNode>[] = [];
      const moved: Layout = {};
      for (const c of changes) {
        if (c.type === "select") onSelectNode(c.id, c.selected);
        else if (c.type === "remove") {
          // Deleting is the composer's (Delete key, the panel's button): one undoable edit.
        } else {
          rest.push(c);
          if (c.type === "position" && c.position && !c.dragging) moved[layoutKey(c.id)] = [Math.round(c.position.x), Math.round(c.position.y)];
        }
      }
      if (rest.length) setNodes((n) => applyNodeChanges(rest, n));
      if (Object.keys(moved).length) onMoved(moved);
    },
    [onSelectNode, onMoved],
  );

  const onEdgesChange = useCallback(
    (changes: EdgeChange[]) => {
      for (const c of changes) if (c.type === "select") onSelectEdge(c.id, c.selected);
    },
    [onSelectEdge],
  );

  return (
    <ReactFlow
      nodes={nodes}
      edges={props.edges}
      nodeTypes={nodeTypes}
      onNodesChange={onNodesChange}
      onEdgesChange={onEdgesChange}
      onConnect={props.onConnect}
      isValidConnection={props.isValidConnection}
      deleteKeyCode={null}
      minZoom={props.minZoom}
      maxZoom={2}
      fitView
      fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
      onlyRenderVisibleElements={props.cull}
      elevateEdgesOnSelect
    >
      <Background gap={20} />
      <Controls showInteractive={false} />
    </ReactFlow>
  );
});

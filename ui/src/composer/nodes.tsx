// The canvas's node components: a step (id, action, badges, its input fields as target handles and
// output fields as source handles, diagnostics on the node and on the field) and the pattern's
// input / output. Memoized: a node re-renders only when its own data, selection or position does,
// or when the zoom crosses the level of detail. Zoomed out (text unreadable anyway) a node keeps
// its size and handles but draws only its header: big graphs render several times faster.
import { Handle, Position, useStore, useUpdateNodeInternals, type NodeProps, type ReactFlowState } from "@xyflow/react";
import { memo, useEffect, useRef } from "react";
import { CTL, GEOMETRY, NEW_INPUT, NEW_OUTPUT, WHOLE, type IoFlowNode, type Row, type StepFlowNode } from "./derive";
import type { Diag } from "./validate";

/** Below this zoom, nodes draw their outline and id, and one handle a side (every edge of the
 * node attaches there: rows 20 px apart are 2 px apart at this zoom). */
export const COMPACT_ZOOM = 0.4;
export const compactSelector = (s: ReactFlowState) => s.transform[2] < COMPACT_ZOOM;

/** The level of detail; when it changes the node's handles change, so xyflow measures them again. */
function useCompact(id: string): boolean {
  const compact = useStore(compactSelector);
  const update = useUpdateNodeInternals();
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    update(id);
  }, [compact, id, update]);
  return compact;
}

function InRow({ row }: { row: Row }) {
  const cls = `row in${row.error ? " invalid" : row.warning ? " warn" : ""}`;
  const msg = row.error ?? row.warning;
  return (
    <li className={cls} data-field={row.field} style={row.depth ? { paddingLeft: 10 + row.depth * 12 } : undefined}>
      <Handle type="target" position={Position.Left} id={row.handle} className="h-in" />
      <div className="line">
        <span className="name">{row.label}</span> <span className="type">{row.type}</span>
      </div>
      {row.value && (
        <div className={row.expr ? "val expr" : "val"} title={row.value}>
          {row.value}
        </div>
      )}
      {msg && (
        <div className={`msg ${row.error ? "error" : "warning"}`} role="note" title={msg}>
          <span aria-hidden="true">{row.error ? "● " : "▲ "}</span>
          {msg}
        </div>
      )}
    </li>
  );
}

function OutRow({ row }: { row: Row }) {
  return (
    <li className="row out" data-field={row.field} style={row.depth ? { paddingRight: 10 + row.depth * 12 } : undefined}>
      <div className="line">
        <span className="name">{row.label}</span> <span className="type">{row.type}</span>
      </div>
      <Handle type="source" position={Position.Right} id={row.handle} className="h-out" />
    </li>
  );
}

function NodeDiags({ diags }: { diags: Diag[] }) {
  if (diags.length === 0) return null;
  const max = GEOMETRY.maxDiagLines;
  return (
    <ul className="node-diags">
      {diags.slice(0, max).map((d, i) => (
        <li key={i} className={d.severity} title={d.message}>
          {d.message}
        </li>
      ))}
      {diags.length > max && <li className="muted">+{diags.length - max} more</li>}
    </ul>
  );
}

function StepNodeView({ id, data, selected }: NodeProps<StepFlowNode>) {
  const compact = useCompact(id);
  const errors = data.diags.filter((d) => d.severity === "error");
  const warnings = data.diags.filter((d) => d.severity === "warning");
  const cls = `step-node kind-${data.kind}${selected ? " selected" : ""}${errors.length ? " has-errors" : ""}${compact ? " compact" : ""}`;
  const head = (
    <>
      <Handle type="target" position={Position.Left} id={CTL} className="h-ctl" title="depends on" />
      <Handle type="source" position={Position.Right} id={WHOLE} className="h-whole" title="the whole output" />
      <header>
        <span className="sid">{data.stepId || <em>no id</em>}</span>
        {errors.length > 0 && (
          <span className="count error" title={errors.map((d) => d.message).join("\n")}>
            {errors.length} error{errors.length > 1 ? "s" : ""}
          </span>
        )}
        {errors.length === 0 && warnings.length > 0 && <span className="count warning">{warnings.length} warning{warnings.length > 1 ? "s" : ""}</span>}
      </header>
      <div className="title" title={data.subtitle ? `${data.subtitle}/${data.title}` : data.title}>
        <strong>{data.title}</strong>
        {!compact && data.subtitle && <span className="sub">{data.subtitle}</span>}
      </div>
    </>
  );
  if (compact) {
    return (
      <div className={cls} data-step={data.stepId} style={{ height: data.height }}>
        {head}
      </div>
    );
  }
  return (
    <div className={cls} data-step={data.stepId} style={{ height: data.height }}>
      {head}
      {data.badges.length > 0 && (
        <div className="badges">
          {data.badges.map((b) => (
            <span key={b} className="badge">
              {b}
            </span>
          ))}
        </div>
      )}
      <NodeDiags diags={data.nodeDiags} />
      {data.inRows.length > 0 && (
        <ul className="rows">
          {data.inRows.map((r) => (
            <InRow key={r.handle} row={r} />
          ))}
        </ul>
      )}
      {data.outRows.length > 0 && (
        <ul className="rows outs">
          {data.outRows.map((r) => (
            <OutRow key={r.handle} row={r} />
          ))}
        </ul>
      )}
    </div>
  );
}

function IoNodeView({ id, data, selected }: NodeProps<IoFlowNode>) {
  const compact = useCompact(id);
  const input = data.kind === "input";
  const errors = data.diags.filter((d) => d.severity === "error");
  const cls = `io-node ${data.kind}${selected ? " selected" : ""}${errors.length ? " has-errors" : ""}${compact ? " compact" : ""}`;
  const newHandle = input ? (
    <Handle type="source" position={Position.Right} id={NEW_INPUT} className="h-out" />
  ) : (
    <Handle type="target" position={Position.Left} id={NEW_OUTPUT} className="h-in" />
  );
  return (
    <div className={cls} style={{ height: data.height }}>
      <header>
        <span className="sid">{input ? "input" : "output"}</span>
        {errors.length > 0 && <span className="count error">{errors.length} error{errors.length > 1 ? "s" : ""}</span>}
      </header>
      <div className="title">
        <strong>{input ? "Pattern input" : "Pattern output"}</strong>
      </div>
      {compact ? (
        input ? (
          <Handle type="source" position={Position.Right} id={WHOLE} className="h-whole" />
        ) : (
          <Handle type="target" position={Position.Left} id={CTL} className="h-ctl" />
        )
      ) : (
        <>
          <ul className="rows">
            {data.rows.map((r) => (input ? <OutRow key={r.handle} row={r} /> : <InRow key={r.handle} row={r} />))}
            <li className={`row new ${input ? "out" : "in"}`}>
              <div className="line">
                <span className="name muted">{input ? "+ new input (drag to a field)" : "+ new output (drop a field here)"}</span>
              </div>
              {newHandle}
            </li>
          </ul>
          <NodeDiags diags={data.nodeDiags} />
        </>
      )}
    </div>
  );
}

export const nodeTypes = { step: memo(StepNodeView), io: memo(IoNodeView) };

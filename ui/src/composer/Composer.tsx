// The composer: palette | canvas (+ diagnostics) | side panel | YAML. The document is the one
// truth (undoable); the canvas, the forms and the YAML are views of it that edit it.
import { toJson } from "@bufbuild/protobuf";
import { useNodesInitialized, useReactFlow, useStore, type Connection, type Edge } from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent } from "react";
import { errorText, nexus } from "../api";
import { PatternSchema } from "../gen/nexus/v1/nexus_pb";
import { edgesOf, INPUT_NODE, OUTPUT_NODE, stepIndexByNode, stepsOf } from "../model/graph";
import { addStep, connect, disconnect, idFromAction, removeStep, renameStep, setPatternField, uniqueStepId, withKey } from "../model/ops";
import type { Ref } from "../model/refs";
import type { JsonObj, PatternDoc } from "../model/types";
import { isObj, SERVER_FIELDS } from "../model/types";
import type { Layout } from "../model/yaml";
import { href, type Route } from "../router";
import { useSession } from "../session";
import { useCatalog, type Catalog } from "./catalog";
import { CTL, derive, Deriver, IO_WIDTH, layoutKey, NEW_INPUT, NEW_OUTPUT, NODE_WIDTH, nodeHeight, WHOLE, type Row } from "./derive";
import { EdgePanel, PatternForm, StepForm } from "./forms";
import { useEditor, type EditorState } from "./history";
import { autoLayout, DAGRE_MAX_ON_OPEN } from "./layout";
import { Canvas } from "./Canvas";
import { readDraft } from "./draft";
import { COMPACT_ZOOM, compactSelector } from "./nodes";
import { DRAG_TYPE, Palette } from "./Palette";
import { RegisterPanel } from "./RegisterPanel";
import { locate, useValidation, type Diag } from "./validate";
import { YamlPane } from "./YamlPane";

const EMPTY_DOC: PatternDoc = { name: "", version: "1.0.0", steps: [] };
const EMPTY_LAYOUT: Layout = { [INPUT_NODE]: [0, 80], [OUTPUT_NODE]: [760, 80] };
const LAYOUT_KEY = (name: string) => `nexus.composer.layout:${name}`;

/** A registered pattern as a document: proto JSON with proto field names, server fields dropped. */
export function docFromPattern(p: Parameters<typeof toJson<typeof PatternSchema>>[1]): PatternDoc {
  const json = toJson(PatternSchema, p, { useProtoFieldName: true }) as JsonObj;
  for (const k of SERVER_FIELDS) delete json[k];
  return json;
}

function stepIdsOf(doc: PatternDoc): string[] {
  return stepsOf(doc).map((s, i) => (isObj(s) && typeof s.id === "string" && s.id ? s.id : `#${i}`));
}

function storedLayout(name: string, doc: PatternDoc): Layout | null {
  if (!name) return null;
  try {
    const raw = localStorage.getItem(LAYOUT_KEY(name));
    if (!raw) return null;
    const l = JSON.parse(raw) as Layout;
    return stepIdsOf(doc).every((k) => Array.isArray(l[k])) ? l : null;
  } catch {
    return null;
  }
}

/** Positions for every node (dagre; the linear layout for a big graph being opened), from the
 * nodes' sizes (measured when known, else estimated from their rows). */
function layoutFor(doc: PatternDoc, catalog: Catalog | null, measured?: Map<string, { width?: number; height?: number }>, opening = false): Layout {
  const d = derive(new Deriver(), doc, {}, catalog, [], null, null);
  const nodes = d.nodes.map((n) => {
    const m = measured?.get(n.id);
    return { key: layoutKey(n.id), width: m?.width ?? (n.type === "io" ? IO_WIDTH : NODE_WIDTH), height: m?.height ?? nodeHeight(n.data) };
  });
  const edges = d.graphEdges.map((e) => ({ from: layoutKey(e.source), to: layoutKey(e.target) }));
  return autoLayout(nodes, edges, INPUT_NODE, OUTPUT_NODE, opening);
}

/** The viewport showing every node of a document laid out as `layout`. */
function fitViewport(doc: PatternDoc, layout: Layout, catalog: Catalog | null, width: number, height: number): { x: number; y: number; zoom: number } {
  const d = derive(new Deriver(), doc, layout, catalog, [], null, null);
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of d.nodes) {
    const w = n.type === "io" ? IO_WIDTH : NODE_WIDTH;
    x0 = Math.min(x0, n.position.x);
    y0 = Math.min(y0, n.position.y);
    x1 = Math.max(x1, n.position.x + w);
    y1 = Math.max(y1, n.position.y + n.data.height);
  }
  if (!Number.isFinite(x0)) return { x: 0, y: 0, zoom: 1 };
  const pad = 0.1;
  // A small graph stays readable (its rows and handles drawn) even if it then overflows a little.
  const floor = d.nodes.length <= 30 ? COMPACT_ZOOM + 0.02 : MIN_ZOOM;
  const zoom = Math.max(floor, Math.min(1, (width * (1 - pad)) / (x1 - x0), (height * (1 - pad)) / (y1 - y0)));
  return { x: width / 2 - ((x0 + x1) / 2) * zoom, y: height / 2 - ((y0 + y1) / 2) * zoom, zoom };
}

const MIN_ZOOM = 0.03;

/**
 * Positions for nodes that have none (steps added in the YAML): next to the graph, stacked; when
 * most of the graph is new (a pasted document), the whole graph is laid out.
 */
function fillLayout(doc: PatternDoc, layout: Layout, catalog: Catalog | null): Layout {
  const keys = [INPUT_NODE, ...stepIdsOf(doc), OUTPUT_NODE];
  const missing = keys.filter((k) => !layout[k]);
  if (missing.length === 0) return layout;
  if (missing.length > 3 && missing.length * 2 > keys.length) return layoutFor(doc, catalog, undefined, true);
  const xs = keys.filter((k) => layout[k]).map((k) => layout[k][0]);
  const x = xs.length ? Math.max(...xs) + 320 : 0;
  const out = { ...layout };
  missing.forEach((k, i) => {
    out[k] = [x, i * 200];
  });
  return out;
}

function inputTypeFor(row: Row | undefined): string {
  const t = row?.type ?? "string";
  if (t.startsWith("list<")) return "array";
  if (/64$/.test(t)) return "string"; // proto3 JSON carries 64-bit integers as strings
  if (["integer", "int32", "uint32"].includes(t)) return "integer";
  if (["number", "double", "float"].includes(t)) return "number";
  if (t === "boolean") return "boolean";
  if (["string", "timestamp", "duration", "bytes", "enum", "condition", "?", "any"].includes(t)) return "string";
  return "object";
}

function uniqueKey(existing: Record<string, unknown>, base: string): string {
  const b = base.replace(/[^A-Za-z0-9_]/g, "_") || "value";
  if (!(b in existing)) return b;
  for (let n = 2; ; n++) if (!(`${b}_${n}` in existing)) return `${b}_${n}`;
}

type Load = { status: "ready" } | { status: "loading" } | { status: "error"; error: string };

function isEditable(el: EventTarget | null): boolean {
  if (!(el instanceof HTMLElement)) return false;
  return el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
}

export function Composer({ route }: { route: Route }) {
  const rf = useReactFlow();
  const session = useSession();
  const canAuthor = session.can("author");
  const catalogState = useCatalog();
  const catalog = catalogState.status === "ready" ? catalogState.catalog : null;
  const editor = useEditor(() => ({ doc: EMPTY_DOC, layout: EMPTY_LAYOUT, comments: [] }));
  const { state, apply, edit } = editor;
  const { doc, layout } = state;
  const [load, setLoad] = useState<Load>({ status: "ready" });
  const [selNode, setSelNode] = useState<string | null>(null);
  const [selEdge, setSelEdge] = useState<string | null>(null);
  const [showYaml, setShowYaml] = useState(true);
  const [showHelp, setShowHelp] = useState(false);
  const [showRegister, setShowRegister] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const searchRef = useRef<HTMLInputElement>(null);
  const canvasRef = useRef<HTMLDivElement>(null);
  const focusIdInput = useRef(false);
  const deriver = useMemo(() => new Deriver(), []);
  const validation = useValidation(doc);
  const diags = validation.diagnostics;

  const name = route.rest[0] ?? "";
  const version = route.query.get("version") ?? "";
  const add = route.query.get("add") ?? "";
  const draft = name ? "" : (route.query.get("draft") ?? "");

  // Open: a registered pattern (fetched while the catalog loads), a draft handed over by another
  // page (`?draft=KEY`, see draft.ts), or a new canvas (optionally with an action placed).
  const opened = useRef<string | null>(null);
  const [fetched, setFetched] = useState<{ key: string; doc: PatternDoc } | null>(null);
  const routeKey = `${name}@${version}${draft ? `?draft=${draft}` : ""}`;
  useEffect(() => {
    if (!name) return;
    let live = true;
    setLoad({ status: "loading" });
    nexus.getPattern({ name, version }).then(
      (p) => live && setFetched({ key: `${name}@${version}`, doc: docFromPattern(p) }),
      (err) => live && setLoad({ status: "error", error: errorText(err) }),
    );
    return () => {
      live = false;
    };
  }, [name, version]);
  useEffect(() => {
    if (opened.current === routeKey) return;
    setNotice(null);
    if (!name && draft) {
      // The sizes for the automatic layout come from the catalog: wait for it (or its failure).
      if (catalogState.status === "loading") return;
      opened.current = routeKey;
      setSelNode(null);
      setSelEdge(null);
      const got = readDraft(draft);
      if (!got) {
        editor.reset({ doc: EMPTY_DOC, layout: EMPTY_LAYOUT, comments: [] });
        setLoad({ status: "error", error: "it is no longer kept in this tab (drafts live in the tab that made them): open it again from where it came from" });
        return;
      }
      const l = layoutFor(got.doc, catalog, undefined, true);
      const rect = canvasRef.current?.getBoundingClientRect();
      if (rect) void rf.setViewport(fitViewport(got.doc, l, catalog, rect.width, rect.height));
      editor.reset({ doc: got.doc, layout: l, comments: [] });
      setNotice(`Opened ${got.origin || "a draft"}: not registered yet. Check it, edit it if needed, then register it.`);
      setLoad({ status: "ready" });
      return;
    }
    if (!name) {
      if (add && catalogState.status === "loading") return; // place it once the catalog is here
      opened.current = routeKey;
      let next: EditorState = { doc: EMPTY_DOC, layout: EMPTY_LAYOUT, comments: [] };
      if (add) {
        const r = addStep(EMPTY_DOC, add);
        next = { ...next, doc: r.doc, layout: { ...EMPTY_LAYOUT, [r.id]: [340, 60] } };
        setSelNode(`step:${r.id}`);
      } else {
        setSelNode(null);
      }
      setSelEdge(null);
      editor.reset(next);
      setLoad({ status: "ready" });
      requestAnimationFrame(() => void rf.fitView({ padding: 0.2, maxZoom: 1 }));
      return;
    }
    // The sizes for the automatic layout come from the catalog: wait for it (or its failure).
    if (!fetched || fetched.key !== routeKey || catalogState.status === "loading") return;
    opened.current = routeKey;
    const d = fetched.doc;
    const l = storedLayout(name, d) ?? layoutFor(d, catalog, undefined, true);
    // The viewport first (node sizes are known before they render): a big graph's first render
    // is then already at its zoomed-out level of detail.
    const rect = canvasRef.current?.getBoundingClientRect();
    if (rect) void rf.setViewport(fitViewport(d, l, catalog, rect.width, rect.height));
    editor.reset({ doc: d, layout: l, comments: [] });
    setSelNode(null);
    setSelEdge(null);
    setLoad({ status: "ready" });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [routeKey, add, fetched, catalogState.status]);

  // Positions are remembered per pattern name (a UI annotation, never part of the pattern).
  useEffect(() => {
    const n = typeof doc.name === "string" ? doc.name : "";
    if (!n) return;
    const t = setTimeout(() => {
      try {
        localStorage.setItem(LAYOUT_KEY(n), JSON.stringify(layout));
      } catch {
        // storage full or disabled: positions stay in the YAML annotation
      }
    }, 400);
    return () => clearTimeout(t);
  }, [doc.name, layout]);

  const compact = useStore(compactSelector);
  const graphEdges = useMemo(() => edgesOf(doc), [doc]);
  const derived = useMemo(
    () => derive(deriver, doc, layout, catalog, diags, selNode, selEdge, compact, graphEdges),
    [deriver, doc, layout, catalog, diags, selNode, selEdge, compact, graphEdges],
  );

  const initialized = useNodesInitialized();

  const onSelectNode = useCallback((id: string, selected: boolean) => {
    if (selected) {
      setSelNode(id);
      setSelEdge(null);
    } else setSelNode((s) => (s === id ? null : s));
  }, []);
  const onSelectEdge = useCallback((id: string, selected: boolean) => {
    if (selected) {
      setSelEdge(id);
      setSelNode(null);
    } else setSelEdge((s) => (s === id ? null : s));
  }, []);
  const onMoved = useCallback(
    (moved: Layout) => {
      const keys = Object.keys(moved);
      apply(keys.length === 1 ? `Move ${keys[0]}` : `Move ${keys.length} nodes`, (s) => ({ ...s, layout: { ...s.layout, ...moved } }), `move:${keys.join(",")}`);
    },
    [apply],
  );

  const rowsOf = useCallback(
    (nodeId: string): Row[] => {
      const n = derived.nodes.find((x) => x.id === nodeId);
      if (!n) return [];
      return n.type === "step" ? [...n.data.inRows, ...n.data.outRows] : n.data.rows;
    },
    [derived.nodes],
  );

  const onConnect = useCallback(
    (c: Connection) => {
      const { source, target } = c;
      const sh = c.sourceHandle ?? WHOLE;
      const th = c.targetHandle ?? CTL;
      if (!source || !target || source === target) return;
      const targetRow = rowsOf(target).find((r) => r.handle === th);
      apply(`Connect ${layoutKey(source)} → ${layoutKey(target)}`, (s) => {
        let d = s.doc;
        const idx = stepIndexByNode(d);
        let ref: Ref;
        // The field it lands in.
        let field: string;
        if (target === OUTPUT_NODE) {
          if (th === NEW_OUTPUT) {
            const base = source === INPUT_NODE ? sh.slice(2) : sh === WHOLE ? layoutKey(source) : sh.slice(2).replace(/\./g, "_");
            field = `output.${uniqueKey(isObj(d.output) ? d.output : {}, base === "$new" ? "value" : base)}`;
          } else field = th.slice(2);
        } else {
          field = th === CTL ? "depends_on" : th.slice(2);
        }
        if (source === INPUT_NODE) {
          if (field === "depends_on") return s;
          let prop = sh.slice(2);
          if (sh === NEW_INPUT) {
            const input = isObj(d.input) ? d.input : { type: "object" };
            const props = isObj(input.properties) ? input.properties : {};
            const last = field.split(/[.[\]]/).filter(Boolean).pop() ?? "value";
            prop = last in props ? last : uniqueKey(props, last);
            if (!(prop in props)) {
              d = setPatternField(d, "input", withKey(input, "properties", { ...props, [prop]: { type: inputTypeFor(targetRow) } }));
            }
          }
          ref = { root: "input", path: prop };
        } else {
          const si = idx.get(source);
          const step = si === undefined ? undefined : stepsOf(d)[si];
          const id = isObj(step) && typeof step.id === "string" ? step.id : "";
          if (!id) return s;
          ref = { root: "steps", step: id, path: sh === WHOLE ? "" : sh.slice(2) };
        }
        if (target === OUTPUT_NODE) d = connect(d, { ref, target: { kind: "output" }, field });
        else {
          const ti = idx.get(target);
          if (ti === undefined) return s;
          d = connect(d, { ref, target: { kind: "step", index: ti }, field });
        }
        return d === s.doc ? s : { ...s, doc: d };
      });
    },
    [apply, rowsOf],
  );

  const isValidConnection = useCallback((c: Connection | Edge) => {
    if (c.source === c.target) return false;
    if (c.source === INPUT_NODE && (c.targetHandle ?? CTL) === CTL) return false;
    return true;
  }, []);

  const selectedIndex = selNode ? derived.stepIndex.get(selNode) : undefined;
  const selectedEdge = selEdge ? derived.graphEdges.find((e) => e.id === selEdge) : undefined;

  const addAction = useCallback(
    (action: string, pos?: [number, number], byKeyboard = false) => {
      const id = uniqueStepId(editor.state.doc, idFromAction(action));
      let at = pos;
      if (!at) {
        const rect = canvasRef.current?.getBoundingClientRect();
        const c = rect ? rf.screenToFlowPosition({ x: rect.left + rect.width / 2, y: rect.top + rect.height / 3 }) : { x: 300, y: 60 };
        at = [Math.round(c.x - NODE_WIDTH / 2), Math.round(c.y)];
        const taken = Object.values(editor.state.layout);
        while (taken.some(([x, y]) => Math.abs(x - at![0]) < 60 && Math.abs(y - at![1]) < 60)) at = [at[0] + 40, at[1] + 40];
      }
      const place: [number, number] = [Math.round(at[0]), Math.round(at[1])];
      apply(`Add step ${id}`, (s) => {
        const r = addStep(s.doc, action, id);
        return { ...s, doc: r.doc, layout: { ...s.layout, [id]: place } };
      });
      setSelNode(`step:${id}`);
      setSelEdge(null);
      focusIdInput.current = byKeyboard;
    },
    [apply, editor.state, rf],
  );

  const deleteSelected = useCallback(() => {
    if (selectedIndex !== undefined && selNode) {
      const key = layoutKey(selNode);
      apply(`Delete step ${key}`, (s) => {
        const l = { ...s.layout };
        delete l[key];
        return { ...s, doc: removeStep(s.doc, selectedIndex), layout: l };
      });
      setSelNode(null);
      canvasRef.current?.focus();
    } else if (selectedEdge) {
      const idx = derived.stepIndex;
      edit(`Remove connection ${selectedEdge.label}`, (d) => disconnect(d, selectedEdge, (n) => idx.get(n)));
      setSelEdge(null);
      canvasRef.current?.focus();
    }
  }, [apply, edit, selectedIndex, selNode, selectedEdge, derived.stepIndex]);

  const renameSelected = useCallback(
    (newId: string) => {
      if (selectedIndex === undefined || !selNode) return;
      const oldKey = layoutKey(selNode);
      const newKey = newId || `#${selectedIndex}`;
      apply(`Rename step ${oldKey} to ${newId}`, (s) => {
        const d = renameStep(s.doc, selectedIndex, newId);
        const l: Layout = {};
        for (const [k, v] of Object.entries(s.layout)) l[k === oldKey ? newKey : k] = v;
        return { ...s, doc: d, layout: l };
      });
      const ids = stepIdsOf(renameStep(doc, selectedIndex, newId));
      const first = ids.indexOf(newId) === selectedIndex;
      setSelNode(newId && first ? `step:${newId}` : `step#${selectedIndex}`);
    },
    [apply, doc, selNode, selectedIndex],
  );

  /** Shows the whole graph (sizes are known: unrendered nodes count too). */
  const fitAll = useCallback(
    (s: EditorState, duration = 0) => {
      const rect = canvasRef.current?.getBoundingClientRect();
      if (rect) void rf.setViewport(fitViewport(s.doc, s.layout, catalog, rect.width, rect.height), duration ? { duration } : undefined);
    },
    [rf, catalog],
  );
  const fitNext = useRef(false);
  useEffect(() => {
    if (!fitNext.current) return;
    fitNext.current = false;
    fitAll(state, 200);
  }, [state, fitAll]);
  const fill = useCallback(
    (d: PatternDoc, l: Layout) => {
      const next = fillLayout(d, l, catalog);
      if (next !== l) fitNext.current = true;
      return next;
    },
    [catalog],
  );

  const runLayout = useCallback(() => {
    const measured = new Map(rf.getNodes().map((n) => [n.id, n.measured ?? {}]));
    fitNext.current = true;
    apply("Automatic layout", (s) => ({ ...s, layout: layoutFor(s.doc, catalog, measured) }));
  }, [apply, catalog, rf]);

  const selectPath = useCallback(
    (path: string) => {
      const loc = locate(path);
      let id: string | null = null;
      if (loc.step !== undefined) id = derived.nodeOfStep[loc.step] ?? null;
      else if (loc.output) id = OUTPUT_NODE;
      else if (loc.input) id = INPUT_NODE;
      setSelEdge(null);
      setSelNode(id);
      if (id) {
        const n = rf.getNode(id);
        if (n) void rf.fitView({ nodes: [{ id }], maxZoom: 1.1, duration: 200 });
      }
    },
    [derived.nodeOfStep, rf],
  );

  // Keyboard: undo / redo, delete, help, search, layout.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const mod = e.ctrlKey || e.metaKey;
      const inYaml = e.target instanceof HTMLElement && !!e.target.closest(".yaml-pane");
      if (mod && !e.altKey && (e.key === "z" || e.key === "Z" || e.key === "y" || e.key === "Y")) {
        if (inYaml) return; // the text's own undo
        e.preventDefault();
        if (e.key.toLowerCase() === "y" || e.shiftKey) editor.redo();
        else editor.undo();
        return;
      }
      if (mod || e.altKey || isEditable(e.target)) return;
      if (e.key === "Delete" || e.key === "Backspace") {
        if (e.target instanceof HTMLElement && e.target.closest(".palette, .inspector, .register")) return;
        e.preventDefault();
        deleteSelected();
      } else if (e.key === "?") {
        setShowHelp((x) => !x);
      } else if (e.key === "Escape") {
        setShowHelp(false);
        setSelNode(null);
        setSelEdge(null);
      } else if (e.key === "/") {
        e.preventDefault();
        searchRef.current?.focus();
      } else if (e.key === "l" || e.key === "L") {
        runLayout();
      } else if (e.key === "f" || e.key === "F") {
        fitAll(editor.state, 200);
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [editor, deleteSelected, runLayout, fitAll]);

  const onDragOver = useCallback((e: DragEvent) => {
    if (e.dataTransfer.types.includes(DRAG_TYPE)) {
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    }
  }, []);
  const onDrop = useCallback(
    (e: DragEvent) => {
      const action = e.dataTransfer.getData(DRAG_TYPE);
      if (!action) return;
      e.preventDefault();
      const p = rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });
      addAction(action, [p.x - 40, p.y - 20]);
    },
    [addAction, rf],
  );

  const idInputRef = useCallback((el: HTMLInputElement | null) => {
    if (el && focusIdInput.current) {
      focusIdInput.current = false;
      el.focus();
      el.select();
    }
  }, []);

  const errors = diags.filter((d) => d.severity === "error");
  const warnings = diags.filter((d) => d.severity === "warning");
  const stepCount = stepsOf(doc).length;
  const title = typeof doc.name === "string" && doc.name ? doc.name : "new pattern";
  const status = validation.error
    ? { cls: "error", text: `Cannot validate: ${validation.error}` }
    : validation.pending && !validation.checked
      ? { cls: "muted", text: "Checking…" }
      : errors.length
        ? { cls: "error", text: `${errors.length} error${errors.length > 1 ? "s" : ""}${warnings.length ? `, ${warnings.length} warning${warnings.length > 1 ? "s" : ""}` : ""}` }
        : { cls: "ok", text: warnings.length ? `Valid, ${warnings.length} warning${warnings.length > 1 ? "s" : ""}` : "Valid" };

  const stepDiags = selectedIndex === undefined ? [] : diags.filter((d) => locate(d.path).step === selectedIndex);
  const patternDiags = diags.filter((d) => locate(d.path).step === undefined);

  return (
    <div className={`composer${showYaml ? " with-yaml" : ""}`}>
      <div className="composer-bar" role="toolbar" aria-label="Composer">
        <h1>
          Composer <span className="muted">·</span> <span data-testid="pattern-title">{title}</span>
          {typeof doc.version === "string" && doc.version && <span className="muted"> @{doc.version}</span>}
        </h1>
        <span className="muted small" data-testid="step-count">
          {stepCount} step{stepCount === 1 ? "" : "s"}
        </span>
        <button type="button" onClick={editor.undo} disabled={!editor.canUndo} title={editor.canUndo ? `Undo: ${editor.undoLabel} (Ctrl+Z)` : "Nothing to undo"}>
          Undo
        </button>
        <button type="button" onClick={editor.redo} disabled={!editor.canRedo} title={editor.canRedo ? `Redo: ${editor.redoLabel} (Ctrl+Shift+Z)` : "Nothing to redo"}>
          Redo
        </button>
        <button type="button" onClick={runLayout} title="Arrange the nodes along the data flow (L)">
          Auto layout
        </button>
        <button type="button" aria-pressed={showYaml} onClick={() => setShowYaml((x) => !x)}>
          YAML
        </button>
        <button type="button" aria-pressed={showHelp} onClick={() => setShowHelp((x) => !x)} aria-keyshortcuts="?">
          Shortcuts
        </button>
        <a
          className="button"
          href={href("composer")}
          onClick={() => {
            opened.current = null;
            if (!name) editor.reset({ doc: EMPTY_DOC, layout: EMPTY_LAYOUT, comments: [] });
          }}
        >
          New
        </a>
        <span className={`status ${status.cls}`} role="status" aria-live="polite" data-testid="validation-status">
          {validation.pending && validation.checked ? "Checking… " : ""}
          {status.text}
        </span>
        <button
          type="button"
          className="primary"
          disabled={!canAuthor}
          title={canAuthor ? "Register this document as a new version" : "Your key may not register patterns: it needs the author or admin role"}
          onClick={() => setShowRegister(true)}
        >
          Register…
        </button>
      </div>
      {showHelp && (
        <section className="help panel" aria-label="Keyboard shortcuts">
          <h2>Keyboard shortcuts</h2>
          <dl>
            <dt>Ctrl/⌘ + Z</dt>
            <dd>Undo (every edit: steps, connections, fields, YAML, positions)</dd>
            <dt>Ctrl/⌘ + Shift + Z, Ctrl + Y</dt>
            <dd>Redo</dd>
            <dt>Tab, Shift + Tab</dt>
            <dd>Move between actions, nodes and fields</dd>
            <dt>Enter or Space on a node</dt>
            <dd>Select it (its form opens in the side panel)</dd>
            <dt>Arrow keys</dt>
            <dd>Move the selected node</dd>
            <dt>Delete, Backspace</dt>
            <dd>Delete the selected step or connection</dd>
            <dt>/</dt>
            <dd>Search the actions; Enter on an action adds it</dd>
            <dt>L</dt>
            <dd>Automatic layout</dd>
            <dt>F</dt>
            <dd>Fit the whole pattern in view</dd>
            <dt>?</dt>
            <dd>Show or hide this help</dd>
            <dt>Escape</dt>
            <dd>Clear the selection</dd>
          </dl>
        </section>
      )}
      {showRegister && (
        <RegisterPanel
          doc={doc}
          setVersion={(v) => edit(`Set version ${v}`, (d) => setPatternField(d, "version", v))}
          onClose={() => setShowRegister(false)}
          onSelectPath={selectPath}
        />
      )}
      {load.status === "error" && (
        <p role="alert" className="error banner">
          Cannot open {name || "the draft"}
          {version ? `@${version}` : ""}: {load.error}
        </p>
      )}
      {notice && (
        <p role="status" className="banner" onClick={() => setNotice(null)}>
          {notice}
        </p>
      )}
      <div className="composer-body">
        <Palette catalog={catalogState} onAdd={(a, kb) => addAction(a, undefined, kb)} searchRef={searchRef} />
        <div className="canvas-col">
          <div
            className="canvas"
            ref={canvasRef}
            tabIndex={-1}
            onDragOver={onDragOver}
            onDrop={onDrop}
            aria-label="Canvas"
            role="region"
            data-testid="canvas"
            data-ready={load.status === "ready" && initialized ? "true" : "false"}
          >
            {load.status === "loading" && <p className="canvas-loading muted">Opening {name}…</p>}
            <Canvas
              nodes={derived.nodes}
              edges={derived.edges}
              minZoom={MIN_ZOOM}
              cull={derived.nodes.length > DAGRE_MAX_ON_OPEN}
              onSelectNode={onSelectNode}
              onSelectEdge={onSelectEdge}
              onMoved={onMoved}
              onConnect={onConnect}
              isValidConnection={isValidConnection}
            />
            {stepCount === 0 && load.status === "ready" && (
              <p className="canvas-empty muted">Drag an action here from the left (or focus one and press Enter), then connect output fields to input fields.</p>
            )}
          </div>
          <DiagnosticsList diags={diags} pending={validation.pending} onSelect={selectPath} />
        </div>
        <aside className="inspector" aria-label="Properties">
          {selectedIndex !== undefined ? (
            <StepForm
              key={selNode}
              doc={doc}
              index={selectedIndex}
              catalog={catalog}
              diags={stepDiags}
              edit={edit}
              onDelete={deleteSelected}
              onRename={renameSelected}
              idInputRef={idInputRef}
            />
          ) : selectedEdge ? (
            <EdgePanel edge={selectedEdge} onRemove={deleteSelected} />
          ) : (
            <PatternForm
              doc={doc}
              diags={patternDiags}
              edit={edit}
              focus={selNode === INPUT_NODE ? "input" : selNode === OUTPUT_NODE ? "output" : undefined}
              key={selNode ?? "pattern"}
            />
          )}
        </aside>
        {showYaml && <YamlPane state={state} apply={apply} fill={fill} />}
      </div>
    </div>
  );
}

function DiagnosticsList({ diags, pending, onSelect }: { diags: Diag[]; pending: boolean; onSelect: (path: string) => void }) {
  return (
    <section className="diagnostics" aria-label="Diagnostics">
      <h2>
        Problems <span className="muted small">({diags.length}{pending ? ", checking…" : ""})</span>
      </h2>
      {diags.length === 0 ? (
        <p className="muted small">{pending ? "Checking…" : "No problems: the server type-checks this pattern."}</p>
      ) : (
        <ul>
          {diags.map((d, i) => (
            <li key={`${d.path}|${d.message}|${i}`} className={d.severity}>
              <button type="button" className="link" onClick={() => onSelect(d.path)}>
                {d.path || "document"}
              </button>
              <span>{d.message}</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

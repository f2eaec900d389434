// Undo / redo for every edit of the composer: the document, the node positions and the leading
// comments move together, one entry per edit. Typing in one field coalesces into one entry.
import { useCallback, useMemo, useReducer } from "react";
import type { Json, PatternDoc } from "../model/types";
import type { Layout } from "../model/yaml";

export interface EditorState {
  doc: PatternDoc;
  layout: Layout;
  /** Leading comment lines of the YAML text (kept through canvas edits). */
  comments: string[];
}

interface Entry {
  state: EditorState;
  label: string;
}

interface HistoryState {
  past: Entry[];
  present: EditorState;
  /** What made `present` (the label the next undo reverts). */
  label: string;
  future: Entry[];
  coalesce: string | null;
  at: number;
}

type Action =
  | { type: "apply"; label: string; fn: (s: EditorState) => EditorState; coalesce?: string }
  | { type: "undo" }
  | { type: "redo" }
  | { type: "reset"; state: EditorState };

const LIMIT = 500;

/** Deep equality, key order included; fast on shared structure (edits share what they keep). */
export function sameJson(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const ob = b as Record<string, Json>;
  const oa = a as Record<string, Json>;
  return ka.every((k, i) => k === kb[i] && sameJson(oa[k], ob[k]));
}

function sameState(a: EditorState, b: EditorState): boolean {
  return sameJson(a.doc, b.doc) && sameJson(a.layout as unknown as Json, b.layout as unknown as Json) && sameJson(a.comments, b.comments);
}
const COALESCE_MS = 1200;

function reducer(h: HistoryState, a: Action): HistoryState {
  switch (a.type) {
    case "apply": {
      const next = a.fn(h.present);
      if (next === h.present || sameState(next, h.present)) return h; // an edit that changes nothing is no entry
      const now = Date.now();
      if (a.coalesce && a.coalesce === h.coalesce && now - h.at < COALESCE_MS) {
        return { ...h, present: next, at: now, future: [] };
      }
      const past = [...h.past, { state: h.present, label: h.label }];
      if (past.length > LIMIT) past.shift();
      return { past, present: next, label: a.label, future: [], coalesce: a.coalesce ?? null, at: now };
    }
    case "undo": {
      const prev = h.past[h.past.length - 1];
      if (!prev) return h;
      return {
        past: h.past.slice(0, -1),
        present: prev.state,
        label: prev.label,
        future: [{ state: h.present, label: h.label }, ...h.future],
        coalesce: null,
        at: 0,
      };
    }
    case "redo": {
      const next = h.future[0];
      if (!next) return h;
      return {
        past: [...h.past, { state: h.present, label: h.label }],
        present: next.state,
        label: next.label,
        future: h.future.slice(1),
        coalesce: null,
        at: 0,
      };
    }
    case "reset":
      return { past: [], present: a.state, label: "", future: [], coalesce: null, at: 0 };
  }
}

export interface Editor {
  state: EditorState;
  /** Applies an edit (one undo entry; same `coalesce` key within a moment merges). */
  apply(label: string, fn: (s: EditorState) => EditorState, coalesce?: string): void;
  /** Shorthand: an edit of the document only. */
  edit(label: string, fn: (d: PatternDoc) => PatternDoc, coalesce?: string): void;
  undo(): void;
  redo(): void;
  reset(state: EditorState): void;
  canUndo: boolean;
  canRedo: boolean;
  undoLabel: string;
  redoLabel: string;
}

export function useEditor(initial: () => EditorState): Editor {
  const [h, dispatch] = useReducer(reducer, undefined, () => ({
    past: [],
    present: initial(),
    label: "",
    future: [],
    coalesce: null,
    at: 0,
  }));
  const apply = useCallback(
    (label: string, fn: (s: EditorState) => EditorState, coalesce?: string) => dispatch({ type: "apply", label, fn, coalesce }),
    [],
  );
  const edit = useCallback(
    (label: string, fn: (d: PatternDoc) => PatternDoc, coalesce?: string) =>
      dispatch({
        type: "apply",
        label,
        fn: (s) => {
          const doc = fn(s.doc);
          return doc === s.doc ? s : { ...s, doc };
        },
        coalesce,
      }),
    [],
  );
  const undo = useCallback(() => dispatch({ type: "undo" }), []);
  const redo = useCallback(() => dispatch({ type: "redo" }), []);
  const reset = useCallback((state: EditorState) => dispatch({ type: "reset", state }), []);
  return useMemo(
    () => ({
      state: h.present,
      apply,
      edit,
      undo,
      redo,
      reset,
      canUndo: h.past.length > 0,
      canRedo: h.future.length > 0,
      undoLabel: h.label,
      redoLabel: h.future[0]?.label ?? "",
    }),
    [h, apply, edit, undo, redo, reset],
  );
}

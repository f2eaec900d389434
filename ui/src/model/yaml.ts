// Document ↔ YAML text. The text may start with comment lines; one of them can be the composer's
// UI-only annotation `# nexus-ui: {"layout":{"user":[0,0],…}}` (node positions). Annotations and
// comments are never part of the Pattern: they are not sent to the server, so registration and
// DiffPatterns never see them.

import { isMap, isSeq, parseDocument, stringify, type Document } from "yaml";
import type { JsonObj, PatternDoc } from "./types";
import { isObj } from "./types";

/** Node positions by layout key: the step id, or `$input` / `$output`. */
export type Layout = Record<string, [number, number]>;

export interface UiAnnotation {
  layout?: Layout;
}

export const ANNOTATION_PREFIX = "# nexus-ui: ";

export interface ParsedYaml {
  ok: true;
  doc: PatternDoc;
  annotation: UiAnnotation;
  /** The leading comment lines other than the annotation, as written (with their `#`). */
  comments: string[];
}

export interface YamlError {
  ok: false;
  message: string;
  /** 1-based; 0 when unknown. */
  line: number;
  col: number;
}

/** YAML text of a document, key order kept, with the leading comments and the annotation. */
export function docToYaml(doc: PatternDoc, annotation?: UiAnnotation, comments: string[] = []): string {
  const head: string[] = [...comments];
  if (annotation && Object.keys(annotation).length > 0) head.push(ANNOTATION_PREFIX + JSON.stringify(annotation));
  const body = Object.keys(doc).length === 0 ? "" : stringify(doc, { lineWidth: 0, minContentWidth: 0, aliasDuplicateObjects: false });
  return head.map((l) => `${l}\n`).join("") + body;
}

function validAnnotation(v: unknown): UiAnnotation {
  if (!isObj(v)) return {};
  const out: UiAnnotation = {};
  if (isObj(v.layout)) {
    const layout: Layout = {};
    for (const [k, p] of Object.entries(v.layout)) {
      if (Array.isArray(p) && p.length === 2 && typeof p[0] === "number" && typeof p[1] === "number") layout[k] = [p[0], p[1]];
    }
    out.layout = layout;
  }
  return out;
}

/** Parses YAML (or JSON) text into a document; errors carry the line and column. */
export function parseYaml(text: string): ParsedYaml | YamlError {
  const lines = text.split("\n");
  const comments: string[] = [];
  let annotation: UiAnnotation = {};
  for (const raw of lines) {
    const line = raw.replace(/\r$/, "");
    if (!line.startsWith("#")) break;
    if (line.startsWith(ANNOTATION_PREFIX)) {
      try {
        annotation = validAnnotation(JSON.parse(line.slice(ANNOTATION_PREFIX.length)));
      } catch {
        // A damaged annotation only loses the positions; automatic layout takes over.
      }
    } else {
      comments.push(line);
    }
  }
  let parsed: Document.Parsed;
  try {
    parsed = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    return { ok: false, message: e instanceof Error ? e.message : String(e), line: 0, col: 0 };
  }
  if (parsed.errors.length > 0) {
    const err = parsed.errors[0];
    const pos = err.linePos?.[0];
    const message = err.message.split("\n")[0];
    return { ok: false, message, line: pos?.line ?? 0, col: pos?.col ?? 0 };
  }
  if (parsed.contents === null) return { ok: true, doc: {}, annotation, comments };
  if (!isMap(parsed.contents)) {
    const range = (parsed.contents as { range?: [number, number, number] }).range;
    const line = range ? text.slice(0, range[0]).split("\n").length : 1;
    const what = isSeq(parsed.contents) ? "a list" : "a scalar";
    return { ok: false, message: `the document must be a mapping (name: …, steps: …), not ${what}`, line, col: 1 };
  }
  const doc = parsed.toJS({ maxAliasCount: 100 }) as JsonObj;
  return { ok: true, doc, annotation, comments };
}

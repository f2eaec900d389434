// The `${{ CEL }}` expressions of a document and the variables they read: `steps.X.a.b` (the
// data edges of the graph) and `input.a` (edges from the pattern's input). Mirrors the server's
// reading (crates/core/src/expr.rs): a template string holds any number of `${{ }}` (a string
// that is exactly one is the typed value), a single-expression field (`when`, `for_each`, a wait
// `match`) is either `${{ expr }}` or the bare expression; `}}` inside a quoted CEL string does
// not close the expression.

import type { Json } from "./types";
import { isObj } from "./types";

export interface Ref {
  root: "steps" | "input";
  /** For `steps`: the step id. */
  step?: string;
  /** The path read below the root (`user.id`), "" for the whole value. */
  path: string;
}

/** A reference found in a field of the document. */
export interface FieldRef {
  /** Where, relative to the owner (`with.owner_id`, `when`, `emit.data.user_id`). */
  field: string;
  ref: Ref;
}

/** Position of the `}}` that closes an expression starting at `from`, skipping quoted strings. */
function findClose(s: string, from: number): number {
  let quote: string | null = null;
  for (let i = from; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === "}" && s[i + 1] === "}") {
      return i;
    }
  }
  return -1;
}

/**
 * Rewrites the code of every expression of `s` (outside quoted CEL strings) with `fn`, keeping
 * everything else as is. `single`: a bare string (no `${{`) is one expression.
 */
export function mapExpressionCode(s: string, single: boolean, fn: (code: string) => string): string {
  if (!s.includes("${{")) return single ? mapCode(s, fn) : s;
  let out = "";
  let rest = 0;
  for (;;) {
    const start = s.indexOf("${{", rest);
    if (start < 0) break;
    const end = findClose(s, start + 3);
    if (end < 0) break; // unterminated: the server reports it; the text stays as it is
    out += s.slice(rest, start + 3) + mapCode(s.slice(start + 3, end), fn);
    rest = end;
  }
  return out + s.slice(rest);
}

/** Applies `fn` to the parts of a CEL source outside quoted strings. */
function mapCode(src: string, fn: (code: string) => string): string {
  let out = "";
  let code = "";
  let quote: string | null = null;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (quote) {
      out += c;
      if (c === "\\" && i + 1 < src.length) out += src[++i];
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      out += fn(code) + c;
      code = "";
      quote = c;
    } else {
      code += c;
    }
  }
  return out + fn(code);
}

const REF = /(?<![\w.$])(steps|input)((?:\.[A-Za-z_]\w*)+)(\s*\()?/g;

/** The `steps.X.…` and `input.…` paths a piece of CEL code reads. */
function refsInCode(code: string, out: Ref[]): void {
  REF.lastIndex = 0;
  for (let m = REF.exec(code); m; m = REF.exec(code)) {
    const segs = m[2].slice(1).split(".");
    if (m[3]) segs.pop(); // `.size()`: a method, not a field
    if (m[1] === "steps") {
      if (segs.length === 0) continue;
      out.push({ root: "steps", step: segs[0], path: segs.slice(1).join(".") });
    } else {
      if (segs.length === 0) continue;
      out.push({ root: "input", path: segs.join(".") });
    }
  }
}

/** The references of one string (a template, or a single expression when `single`). */
export function refsInString(s: string, single: boolean): Ref[] {
  const out: Ref[] = [];
  mapExpressionCode(s, single, (code) => {
    refsInCode(code, out);
    return code;
  });
  return out;
}

/** Whether a string holds an expression (what the forms show as "expression" rather than literal). */
export function isExpression(v: unknown): boolean {
  return typeof v === "string" && v.includes("${{");
}

/** Appends `[index]` or `.key` to a document path. */
export function joinPath(base: string, part: string | number): string {
  if (typeof part === "number") return `${base}[${part}]`;
  return base ? `${base}.${part}` : part;
}

/** Every reference in a template value (object / list / string), with the field it is in. */
export function refsInValue(v: Json | undefined, field: string, single: boolean, out: FieldRef[]): void {
  if (typeof v === "string") {
    for (const ref of refsInString(v, single)) out.push({ field, ref });
  } else if (Array.isArray(v)) {
    v.forEach((x, i) => refsInValue(x, joinPath(field, i), single, out));
  } else if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) refsInValue(x, joinPath(field, k), single, out);
  }
}

/** Rewrites `steps.from` to `steps.to` in every expression of a value. */
export function renameInValue<T extends Json | undefined>(v: T, from: string, to: string, single: boolean): T {
  if (typeof v === "string") {
    const re = new RegExp(`(?<![\\w.$])steps\\.${from}(?!\\w)`, "g");
    const next = mapExpressionCode(v, single, (code) => code.replace(re, `steps.${to}`));
    return next as T;
  }
  if (Array.isArray(v)) {
    let changed = false;
    const next = v.map((x) => {
      const y = renameInValue(x, from, to, single);
      if (y !== x) changed = true;
      return y;
    });
    return (changed ? next : v) as T;
  }
  if (isObj(v)) {
    let changed = false;
    const next: Record<string, Json> = {};
    for (const [k, x] of Object.entries(v)) {
      const y = renameInValue(x, from, to, single);
      if (y !== x) changed = true;
      next[k] = y;
    }
    return (changed ? next : v) as T;
  }
  return v;
}

/** `${{ steps.X.path }}` / `${{ input.path }}`. */
export function refExpression(ref: Ref): string {
  const base = ref.root === "steps" ? `steps.${ref.step}` : "input";
  return `\${{ ${ref.path ? `${base}.${ref.path}` : base} }}`;
}

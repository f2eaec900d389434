// The run form's model: a draft per JSON Schema node (what the inputs hold while the user types),
// built from defaults or a previous input, and turned back into the execution input with a
// message per field that is wrong. The server checks `type`, `properties`, `required`, `items`,
// `enum` and `additionalProperties`; the form also honours the documenting keywords a form is
// expected to (minimum/maximum, minLength/maxLength, pattern, minItems/maxItems).
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

export type Draft =
  | { kind: "string"; text: string }
  | { kind: "number"; text: string }
  | { kind: "enum"; choice: string }
  | { kind: "boolean"; value: boolean | null }
  | { kind: "object"; fields: Record<string, Draft>; extra: JsonObject }
  | { kind: "array"; items: Draft[] }
  | { kind: "json"; text: string };

export type Kind = Draft["kind"];

export const isObject = (v: unknown): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);

/** The node's type name (`string`, …), the first non-null of a list, or "" when it has none. */
export function typeOf(schema: JsonObject): string {
  const t = schema.type;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) return (t.find((x) => typeof x === "string" && x !== "null") as string | undefined) ?? "";
  return "";
}

/**
 * The declared properties: the required ones first, in the order `required` lists them (a list
 * keeps the author's order; `properties` is a map, which the server returns sorted), then the
 * others in name order.
 */
export function properties(schema: JsonObject): [string, JsonObject][] {
  const p = schema.properties;
  if (!isObject(p)) return [];
  const all = Object.entries(p).map(([k, v]): [string, JsonObject] => [k, isObject(v) ? v : {}]);
  const req = [...requiredOf(schema)];
  const first = req.flatMap((k) => all.filter(([n]) => n === k));
  const rest = all.filter(([n]) => !req.includes(n)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return [...first, ...rest];
}

export function requiredOf(schema: JsonObject): Set<string> {
  const r = schema.required;
  return new Set(Array.isArray(r) ? r.filter((x): x is string => typeof x === "string") : []);
}

/** How a schema node is edited. Anything the form cannot say precisely is edited as JSON. */
export function kindOf(schema: JsonObject): Kind {
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return "enum";
  if (schema.oneOf || schema.anyOf || schema.allOf || schema.$ref) return "json";
  switch (typeOf(schema)) {
    case "string":
      return "string";
    case "integer":
    case "number":
      return "number";
    case "boolean":
      return "boolean";
    case "object":
      return properties(schema).length > 0 ? "object" : "json";
    case "array": {
      const items = schema.items;
      return isObject(items) && kindOf(items) !== "json" ? "array" : "json";
    }
    case "":
      return properties(schema).length > 0 ? "object" : "json";
    default:
      return "json";
  }
}

/** Whether the whole input can be edited with the form (an object with declared properties). */
export function formable(schema: JsonObject | undefined): schema is JsonObject {
  return !!schema && kindOf(schema) === "object";
}

function equal(a: JsonValue, b: JsonValue): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The draft of `value`, or of the schema's `default` when `value` is undefined. */
export function draftFrom(schema: JsonObject, value: JsonValue | undefined): Draft {
  const v = value === undefined ? (schema.default as JsonValue | undefined) : value;
  switch (kindOf(schema)) {
    case "string":
      return { kind: "string", text: v === undefined || v === null ? "" : typeof v === "string" ? v : JSON.stringify(v) };
    case "number":
      return { kind: "number", text: typeof v === "number" ? String(v) : typeof v === "string" ? v : "" };
    case "enum": {
      const options = schema.enum as JsonValue[];
      const i = v === undefined ? -1 : options.findIndex((o) => equal(o, v));
      return { kind: "enum", choice: i < 0 ? "" : String(i) };
    }
    case "boolean":
      return { kind: "boolean", value: typeof v === "boolean" ? v : null };
    case "object": {
      const obj = isObject(v) ? v : {};
      const fields: Record<string, Draft> = {};
      const props = properties(schema);
      for (const [k, s] of props) fields[k] = draftFrom(s, obj[k]);
      const extra: JsonObject = {};
      for (const [k, x] of Object.entries(obj)) if (!props.some(([p]) => p === k)) extra[k] = x;
      return { kind: "object", fields, extra };
    }
    case "array": {
      const items = schema.items as JsonObject;
      return { kind: "array", items: Array.isArray(v) ? v.map((x) => draftFrom(items, x)) : [] };
    }
    case "json":
      return { kind: "json", text: v === undefined ? "" : JSON.stringify(v, null, 2) };
  }
}

/** `email`, `address.city`, `tags[0]`. */
export function childPath(parent: string, key: string | number): string {
  if (typeof key === "number") return `${parent}[${key}]`;
  return parent ? `${parent}.${key}` : key;
}

export type Errors = Map<string, string>;

const num = (x: unknown): number | undefined => (typeof x === "number" ? x : undefined);

/**
 * The JSON value of a draft (undefined = leave it out), adding a message per wrong field to
 * `errors`. `required` says whether the parent requires it (booleans then default to false).
 */
export function valueOf(schema: JsonObject, d: Draft, path: string, required: boolean, errors: Errors): JsonValue | undefined {
  switch (d.kind) {
    case "string": {
      if (d.text === "") return undefined;
      const min = num(schema.minLength);
      const max = num(schema.maxLength);
      if (min !== undefined && d.text.length < min) errors.set(path, `At least ${min} characters.`);
      else if (max !== undefined && d.text.length > max) errors.set(path, `At most ${max} characters.`);
      else if (typeof schema.pattern === "string") {
        try {
          if (!new RegExp(schema.pattern, "u").test(d.text)) errors.set(path, `Must match ${schema.pattern}.`);
        } catch {
          /* an invalid pattern constrains nothing */
        }
      }
      return d.text;
    }
    case "number": {
      const text = d.text.trim();
      if (text === "") return undefined;
      const n = Number(text);
      if (!Number.isFinite(n)) {
        errors.set(path, "Must be a number.");
        return undefined;
      }
      if (typeOf(schema) === "integer" && !Number.isInteger(n)) errors.set(path, "Must be a whole number.");
      else if (num(schema.minimum) !== undefined && n < num(schema.minimum)!) errors.set(path, `At least ${schema.minimum}.`);
      else if (num(schema.maximum) !== undefined && n > num(schema.maximum)!) errors.set(path, `At most ${schema.maximum}.`);
      else if (num(schema.exclusiveMinimum) !== undefined && n <= num(schema.exclusiveMinimum)!)
        errors.set(path, `More than ${schema.exclusiveMinimum}.`);
      else if (num(schema.exclusiveMaximum) !== undefined && n >= num(schema.exclusiveMaximum)!)
        errors.set(path, `Less than ${schema.exclusiveMaximum}.`);
      return n;
    }
    case "enum": {
      if (d.choice === "") return undefined;
      return (schema.enum as JsonValue[])[Number(d.choice)];
    }
    case "boolean":
      return d.value ?? (required ? false : undefined);
    case "object": {
      const out: JsonObject = { ...d.extra };
      const req = requiredOf(schema);
      for (const [k, s] of properties(schema)) {
        const p = childPath(path, k);
        const child = d.fields[k] ?? draftFrom(s, undefined);
        const v = valueOf(s, child, p, req.has(k), errors);
        if (v === undefined) {
          if (req.has(k) && !errors.has(p)) errors.set(p, "Required.");
        } else out[k] = v;
      }
      if (path !== "" && !required && Object.keys(out).length === 0) return undefined;
      return out;
    }
    case "array": {
      const items = schema.items as JsonObject;
      const out: JsonValue[] = [];
      d.items.forEach((item, i) => {
        const p = childPath(path, i);
        const v = valueOf(items, item, p, true, errors);
        if (v === undefined) {
          if (!errors.has(p)) errors.set(p, "Fill in this item or remove it.");
        } else out.push(v);
      });
      const min = num(schema.minItems);
      const max = num(schema.maxItems);
      if (min !== undefined && d.items.length < min) errors.set(path, `At least ${min} item${min === 1 ? "" : "s"}.`);
      else if (max !== undefined && d.items.length > max) errors.set(path, `At most ${max} item${max === 1 ? "" : "s"}.`);
      if (!required && d.items.length === 0) return undefined;
      return out;
    }
    case "json": {
      if (d.text.trim() === "") return undefined;
      let v: JsonValue;
      try {
        v = JSON.parse(d.text) as JsonValue;
      } catch (e) {
        errors.set(path, `Not valid JSON: ${(e as Error).message}`);
        return undefined;
      }
      const t = typeOf(schema);
      if (t === "object" && !isObject(v)) errors.set(path, "Must be a JSON object ({…}).");
      if (t === "array" && !Array.isArray(v)) errors.set(path, "Must be a JSON list ([…]).");
      return v;
    }
  }
}

/** The whole input and the problems with it. */
export function inputOf(schema: JsonObject, d: Draft): { input: JsonObject; errors: Errors } {
  const errors: Errors = new Map();
  const v = valueOf(schema, d, "", true, errors);
  return { input: isObject(v) ? v : {}, errors };
}

/** Parses the raw JSON editor's text: an object, or why not. */
export function parseInputJson(text: string): { input?: JsonObject; error?: string } {
  if (text.trim() === "") return { input: {} };
  try {
    const v = JSON.parse(text) as JsonValue;
    if (!isObject(v)) return { error: "The input must be a JSON object ({…})." };
    return { input: v };
  } catch (e) {
    return { error: `The input is not valid JSON: ${(e as Error).message}` };
  }
}

/** A human label for a schema node's type: `string`, `integer`, `list of string`, `one of …`. */
export function typeLabel(schema: JsonObject): string {
  if (Array.isArray(schema.enum)) return "one of the listed values";
  const t = typeOf(schema);
  if (t === "array" && isObject(schema.items)) return `list of ${typeLabel(schema.items) || "values"}`;
  const fmt = typeof schema.format === "string" ? ` (${schema.format})` : "";
  return t ? `${t}${fmt}` : "any JSON";
}

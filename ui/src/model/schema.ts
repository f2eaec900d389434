// Fields of an action's input / output message from the JSON Schemas the catalog serves
// (crates/core/src/schema.rs: inline schemas, `title` = message name, recursion cut with a
// `$comment`). Flattened to paths (`user`, `user.id`) for the node handles and the forms.

import type { Json, JsonObj } from "./types";
import { isObj } from "./types";

export interface FieldInfo {
  /** `user.id` (no `with.` prefix). */
  path: string;
  name: string;
  depth: number;
  /** Short type for people: `string`, `int32`, `uint32`, `int64`, `integer`, `double`, `boolean`, `number`, `enum`, `Message`, `list<string>`, `timestamp`, `duration`, `map`, `any`. */
  type: string;
  schema: JsonObj;
  repeated: boolean;
  /** A message with fields of its own (listed after it, one level deeper). */
  message: boolean;
  enumValues?: string[];
}

function types(s: JsonObj): string[] {
  const t = s.type;
  if (typeof t === "string") return [t];
  if (Array.isArray(t)) return t.filter((x): x is string => typeof x === "string");
  return [];
}

/** Short type name of a field schema. */
export function typeName(s: Json | undefined): string {
  if (!isObj(s)) return "any";
  if (Array.isArray(s.enum)) return "enum";
  const t = types(s);
  if (t.includes("array")) return `list<${typeName(s.items)}>`;
  const format = typeof s.format === "string" ? s.format : "";
  if (t.includes("integer") && t.includes("string")) return format || "int64";
  if (t.includes("integer")) return format || "integer";
  if (t.includes("number")) return format || "number";
  if (t.includes("boolean")) return "boolean";
  if (t.includes("string")) {
    if (s.format === "date-time") return "timestamp";
    if (typeof s.pattern === "string" && s.pattern.endsWith("s$")) return "duration";
    if (s.contentEncoding === "base64") return "bytes";
    return "string";
  }
  if (t.includes("object")) {
    if (typeof s.title === "string") return s.title.split(".").pop() ?? "object";
    if (isObj(s.additionalProperties)) return "map";
    return "object";
  }
  return "any";
}

function hasProps(s: JsonObj): boolean {
  return isObj(s.properties) && Object.keys(s.properties).length > 0;
}

/** A message schema's properties in proto declaration order (the server's `x-field-number`;
 *  JSON objects do not keep it), then any without a number in the order given. */
export function orderedProperties(props: JsonObj): [string, Json][] {
  const num = (v: Json) => (isObj(v) && typeof v["x-field-number"] === "number" ? v["x-field-number"] : Infinity);
  return Object.entries(props)
    .map((e, i) => [e, i] as const)
    .sort(([a, i], [b, j]) => num(a[1]) - num(b[1]) || i - j)
    .map(([e]) => e);
}

/** Fields of a message schema, depth first, messages before their fields, at most `maxDepth` deep. */
export function flattenFields(schema: Json | undefined, maxDepth = 3): FieldInfo[] {
  const out: FieldInfo[] = [];
  const walk = (s: JsonObj, prefix: string, depth: number) => {
    if (!isObj(s.properties)) return;
    for (const [name, raw] of orderedProperties(s.properties)) {
      if (!isObj(raw)) continue;
      const path = prefix ? `${prefix}.${name}` : name;
      const repeated = types(raw).includes("array");
      const message = !repeated && hasProps(raw);
      const info: FieldInfo = { path, name, depth, type: typeName(raw), schema: raw, repeated, message };
      if (Array.isArray(raw.enum)) info.enumValues = raw.enum.filter((x): x is string => typeof x === "string");
      out.push(info);
      if (message && depth + 1 < maxDepth) walk(raw, path, depth + 1);
    }
  };
  if (isObj(schema)) walk(schema, "", 0);
  return out;
}

/** The schema at a field path of a message schema (`user.id`), or undefined. */
export function fieldSchema(schema: Json | undefined, path: string): JsonObj | undefined {
  let cur: Json | undefined = schema;
  for (const part of path.split(".")) {
    if (!isObj(cur) || !isObj(cur.properties)) return undefined;
    cur = cur.properties[part];
  }
  return isObj(cur) ? cur : undefined;
}

/** Names of the properties of a JSON Schema object (the pattern's `input`). */
export function schemaProperties(schema: Json | undefined): string[] {
  return isObj(schema) && isObj(schema.properties) ? Object.keys(schema.properties) : [];
}

// Reads the JSON Schema the server gives for an action's request and response messages
// (crates/core/src/schema.rs: proto3 JSON mapping, proto field names) back into what the catalog
// shows: fields with their protobuf-ish types, enums with their values, repeated, maps, nested
// messages, and the proto comments when the schema carries them (`description`).
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

export type FieldKind = "scalar" | "enum" | "message" | "map" | "wkt" | "any" | "recursive";

export interface FieldInfo {
  name: string;
  /** What the catalog prints: `string`, `int64`, `repeated string`, `map<string, int32>`, `demo.user.v1.User`. */
  type: string;
  kind: FieldKind;
  repeated: boolean;
  map: boolean;
  /** Values of an enum field (or of a map's / a list's enum values). */
  enumValues?: string[];
  /** Their numbers, when the schema gives them (`x-enum-numbers`). */
  enumNumbers?: number[];
  /** Their comments, when the schema gives them (`x-enum-descriptions`, "" for none). */
  enumDescriptions?: string[];
  /** The proto comment of the field, when the schema has it. */
  description?: string;
  /** How the value is written in JSON when it is not obvious (64-bit integers as strings, base64 …). */
  note?: string;
  /** The message to expand (a message field, a list of messages, or a map of messages). */
  message?: MessageInfo;
}

export interface MessageInfo {
  /** Fully-qualified message name (the schema's `title`). */
  title: string;
  description?: string;
  fields: FieldInfo[];
}

type Schema = JsonObject;

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(v: JsonValue | undefined): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function types(s: Schema): string[] {
  const t = s.type;
  if (typeof t === "string") return [t];
  if (Array.isArray(t)) return t.filter((x): x is string => typeof x === "string");
  return [];
}

interface TypeInfo {
  type: string;
  kind: FieldKind;
  enumValues?: string[];
  enumNumbers?: number[];
  enumDescriptions?: string[];
  note?: string;
  message?: MessageInfo;
}

/** The type of one (non-repeated, non-map) value. */
function valueType(s: Schema, depth: number): TypeInfo {
  const t = types(s);
  const format = str(s.format);
  const comment = str(s.$comment);
  if (Array.isArray(s.enum)) {
    const values = s.enum.filter((v): v is string => typeof v === "string");
    const nums = s["x-enum-numbers"];
    const numbers =
      Array.isArray(nums) && nums.length === values.length && nums.every((n) => typeof n === "number") ? (nums as number[]) : undefined;
    const docs = s["x-enum-descriptions"];
    const descriptions =
      Array.isArray(docs) && docs.length === values.length && docs.every((d) => typeof d === "string") ? (docs as string[]) : undefined;
    return {
      type: str(s.title) ?? "enum",
      kind: "enum",
      enumValues: values,
      enumNumbers: numbers,
      enumDescriptions: descriptions,
      note: "name or number",
    };
  }
  if (comment?.startsWith("recursive ")) {
    const name = comment.slice("recursive ".length);
    return { type: name, kind: "recursive", note: "recursive: the same message as above" };
  }
  if (t.length === 0 && Object.keys(s).length === 0) return { type: "google.protobuf.Value", kind: "any", note: "any JSON value" };
  if (t.includes("object")) {
    if (isObject(s.properties) && (str(s.title) || Object.keys(s.properties).length > 0)) {
      const message = describeMessage(s, depth + 1);
      return { type: message.title || "message", kind: "message", message };
    }
    if (str(s.title)) return { type: str(s.title)!, kind: "message", message: describeMessage(s, depth + 1) };
    if (s.additionalProperties === false) return { type: "google.protobuf.Empty", kind: "wkt" };
    return { type: "google.protobuf.Struct", kind: "wkt", note: "any JSON object" };
  }
  if (t.includes("array")) return { type: "google.protobuf.ListValue", kind: "wkt", note: "any JSON array" };
  if (t.includes("integer") && t.includes("string")) {
    return { type: format ?? "int64", kind: "scalar", note: "64-bit: a JSON string or number" };
  }
  if (t.includes("integer")) return { type: format ?? "int32", kind: "scalar" };
  if (t.includes("number")) return { type: format ?? "double", kind: "scalar" };
  if (t.includes("boolean")) return { type: "bool", kind: "scalar" };
  if (t.includes("string")) {
    if (format === "date-time") return { type: "google.protobuf.Timestamp", kind: "wkt", note: "RFC 3339 text" };
    if (str(s.pattern) === "^-?[0-9.]+s$") return { type: "google.protobuf.Duration", kind: "wkt", note: 'seconds, e.g. "1.5s"' };
    if (str(s.contentEncoding) === "base64") return { type: "bytes", kind: "scalar", note: "base64 text" };
    return { type: format ?? "string", kind: "scalar" };
  }
  return { type: t.join(" | ") || "unknown", kind: "any" };
}

const MAX_DEPTH = 12;

function field(name: string, s: Schema, depth: number): FieldInfo {
  const description = str(s.description);
  const t = types(s);
  // repeated
  if (t.length === 1 && t[0] === "array" && isObject(s.items)) {
    const item = valueType(s.items, depth);
    return { name, ...item, type: `repeated ${item.type}`, repeated: true, map: false, description };
  }
  // map<string, V>: an object with a schema for its values and no properties of its own
  if (t.length === 1 && t[0] === "object" && isObject(s.additionalProperties) && !str(s.title) && !isObject(s.properties)) {
    const value = valueType(s.additionalProperties, depth);
    return { name, ...value, type: `map<string, ${value.type}>`, repeated: false, map: true, description };
  }
  return { name, ...valueType(s, depth), repeated: false, map: false, description };
}

function fieldNumber(s: Schema): number {
  const n = s["x-field-number"];
  return typeof n === "number" ? n : Number.MAX_SAFE_INTEGER;
}

/** The fields of a message schema: by field number when the schema has them (`x-field-number`), else as listed. */
export function describeMessage(schema: Schema | undefined, depth = 0): MessageInfo {
  if (!schema) return { title: "", fields: [] };
  const props = isObject(schema.properties) ? schema.properties : {};
  const fields =
    depth > MAX_DEPTH
      ? []
      : Object.entries(props)
          .map(([name, s]) => ({ name, s: isObject(s) ? s : {} }))
          // A Struct has no key order: declaration order comes from the field numbers when given.
          .sort((a, b) => fieldNumber(a.s) - fieldNumber(b.s))
          .map(({ name, s }) => field(name, s, depth));
  return { title: str(schema.title) ?? "", description: str(schema.description), fields };
}

/** Every field name in a message and its nested messages (for the catalog's search). */
export function fieldNames(info: MessageInfo, out: Set<string> = new Set(), seen: Set<MessageInfo> = new Set()): Set<string> {
  if (seen.has(info)) return out;
  seen.add(info);
  for (const f of info.fields) {
    out.add(f.name);
    if (f.message) fieldNames(f.message, out, seen);
  }
  return out;
}

/** A request skeleton: every field with a placeholder of its type (what a `with` block may hold). */
export function example(info: MessageInfo, depth = 0): JsonObject {
  const out: JsonObject = {};
  for (const f of info.fields) {
    let v: JsonValue;
    if (f.message && f.kind === "message" && depth < 3) v = example(f.message, depth + 1);
    else if (f.kind === "message" || f.kind === "recursive") v = {};
    else if (f.kind === "enum") v = f.enumValues?.[0] ?? "";
    else if (f.type === "bool" || f.type.endsWith(" bool")) v = false;
    else if (f.note?.startsWith("64-bit")) v = "0";
    else if (/int|fixed|double|float/.test(f.type)) v = 0;
    else if (f.type.includes("Timestamp")) v = "2024-01-01T00:00:00Z";
    else if (f.type.includes("Duration")) v = "1s";
    else if (f.type.includes("Struct")) v = {};
    else v = "";
    if (f.repeated) v = [v];
    else if (f.map) v = { key: v };
    out[f.name] = v;
  }
  return out;
}

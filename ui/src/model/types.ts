// The pattern document as the composer holds it: the proto3 JSON of `nexus.v1.Pattern` (proto
// field names), exactly as written (YAML or JSON), key order included. The composer never
// normalises it: what the user typed is what is validated, registered and shown.

export type Json = null | boolean | number | string | Json[] | JsonObj;
export interface JsonObj {
  [key: string]: Json;
}

/** A pattern document (`nexus.v1.Pattern` in proto3 JSON with proto field names). */
export type PatternDoc = JsonObj;
/** One element of `steps`. */
export type StepDoc = JsonObj;

/** A path into a document: object keys and array indexes. */
export type PathPart = string | number;

export function isObj(v: unknown): v is JsonObj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Proto field order of `nexus.v1.Pattern` (where a key the document lacks is inserted). */
export const PATTERN_KEYS = [
  "name",
  "version",
  "description",
  "owner",
  "visibility",
  "durability",
  "timeout",
  "input",
  "steps",
  "output",
  "tags",
  "on",
  "schedule",
] as const;

/** Proto field order of `nexus.v1.Step`. */
export const STEP_KEYS = [
  "id",
  "call",
  "with",
  "depends_on",
  "when",
  "for_each",
  "concurrency",
  "retry",
  "timeout",
  "compensate",
  "stream",
  "emit",
  "wait_for",
] as const;

/** Fields the server sets (never sent back, never edited): dropped when a pattern is opened. */
export const SERVER_FIELDS = ["registered_at", "tenant", "forked_from", "deprecated", "stars", "executions"] as const;

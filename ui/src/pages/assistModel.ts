// Pure logic of the Assist page (pages/Assist.tsx): suggestion kinds by name, the filters in the
// address, figures in words, and the Generate form — goal fields typed as rows or pasted as
// `name:type` lists, checked before they are sent, and the GeneratePattern request they make.
import { SuggestionKind, type Gain } from "../gen/nexus/v1/nexus_pb";

// ---------------------------------------------------------------------------------------------
// Suggestions.

export const KINDS: { value: string; kind: SuggestionKind; label: string; help: string }[] = [
  {
    value: "composite",
    kind: SuggestionKind.COMPOSITE,
    label: "Composite",
    help: "Patterns run one after another with data flowing between them, as one pattern.",
  },
  {
    value: "shared_subpattern",
    kind: SuggestionKind.SHARED_SUBPATTERN,
    label: "Shared sub-pattern",
    help: "A step sequence several patterns share, as a pattern they could call.",
  },
  {
    value: "retry_policy",
    kind: SuggestionKind.RETRY_POLICY,
    label: "Retry policy",
    help: "A step that fails and succeeds on retry (or fails on a transient code).",
  },
  {
    value: "parallelize",
    kind: SuggestionKind.PARALLELIZE,
    label: "Parallelize",
    help: "A depends_on without a data dependency: the steps could run in parallel.",
  },
  {
    value: "unread_output",
    kind: SuggestionKind.UNREAD_OUTPUT,
    label: "Unread output",
    help: "A read whose result nothing reads: the step can go.",
  },
];

/** The kind's short name (`composite` …), `unknown` for a kind this UI does not know. */
export function kindValue(kind: SuggestionKind): string {
  return KINDS.find((k) => k.kind === kind)?.value ?? "unknown";
}

export function kindLabel(kind: SuggestionKind): string {
  return KINDS.find((k) => k.kind === kind)?.label ?? "Other";
}

/** Improvements of an existing pattern (they carry `changes`), as opposed to new patterns. */
export function isImprovement(kind: SuggestionKind): boolean {
  return kind === SuggestionKind.RETRY_POLICY || kind === SuggestionKind.PARALLELIZE || kind === SuggestionKind.UNREAD_OUTPUT;
}

export interface SuggestionFilters {
  /** A `KINDS` value, or "" for every kind. */
  kind: string;
  /** Only suggestions involving this pattern. */
  pattern: string;
  /** Least executions a suggestion rests on; "" for the server's default. */
  minSupport: string;
  /** Least confidence in percent; "" for the server's default. */
  minConfidence: string;
}

export const EMPTY_FILTERS: SuggestionFilters = { kind: "", pattern: "", minSupport: "", minConfidence: "" };

const FILTER_PARAMS: [keyof SuggestionFilters, string][] = [
  ["kind", "kind"],
  ["pattern", "pattern"],
  ["minSupport", "min_support"],
  ["minConfidence", "min_confidence"],
];

export function filtersFromQuery(q: URLSearchParams): SuggestionFilters {
  const f = { ...EMPTY_FILTERS };
  for (const [k, p] of FILTER_PARAMS) f[k] = q.get(p) ?? "";
  if (f.kind && !KINDS.some((k) => k.value === f.kind)) f.kind = "";
  return f;
}

export function filtersToQuery(f: SuggestionFilters): string {
  const q = new URLSearchParams();
  for (const [k, p] of FILTER_PARAMS) {
    const v = f[k].trim();
    if (v) q.set(p, v);
  }
  return q.toString();
}

export function hasFilters(f: SuggestionFilters): boolean {
  return FILTER_PARAMS.some(([k]) => f[k].trim() !== "");
}

/** The SuggestPatterns request of the filters (thresholds out of range or not numbers are left to the server's defaults). */
export function suggestRequest(f: SuggestionFilters): { kinds: SuggestionKind[]; patternName: string; minSupport: number; minConfidence: number } {
  const kind = KINDS.find((k) => k.value === f.kind)?.kind;
  const support = Number(f.minSupport);
  const confidence = Number(f.minConfidence);
  return {
    kinds: kind === undefined ? [] : [kind],
    patternName: f.pattern.trim(),
    minSupport: f.minSupport.trim() && Number.isInteger(support) && support > 0 ? support : 0,
    minConfidence: f.minConfidence.trim() && Number.isFinite(confidence) && confidence > 0 && confidence <= 100 ? confidence / 100 : 0,
  };
}

/** `80 %` of a 0–1 share. */
export function percent(share: number): string {
  return `${Math.round(share * 100)} %`;
}

/** The measured figures of a gain, in words (the summary says it in the server's words). */
export function gainFigures(g: Gain | undefined): string[] {
  if (!g) return [];
  const out: string[] = [];
  if (g.callsSavedPerRun > 0) out.push(`${trim(g.callsSavedPerRun)} call${g.callsSavedPerRun === 1 ? "" : "s"} saved per run`);
  if (g.latencySavedMs > 0) out.push(`${trim(g.latencySavedMs)} ms saved per run`);
  if (g.failuresAvoidedPer1000 > 0) out.push(`${trim(g.failuresAvoidedPer1000)} failures avoided per 1,000 runs`);
  return out;
}

function trim(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString("en") : String(Math.round(n * 100) / 100);
}

/** `NAME@VERSION` split (a bare name has no version). */
export function splitPatternRef(ref: string): { name: string; version: string } {
  const at = ref.lastIndexOf("@");
  return at > 0 ? { name: ref.slice(0, at), version: ref.slice(at + 1) } : { name: ref, version: "" };
}

// ---------------------------------------------------------------------------------------------
// Generate.

export interface FieldRow {
  /** Stable React key. */
  key: number;
  name: string;
  type: string;
}

let nextKey = 1;
export function fieldRow(name = "", type = ""): FieldRow {
  return { key: nextKey++, name, type };
}

/**
 * Fields written as text: `email:string, name:string` (commas, semicolons or new lines between
 * them; spaces around `:` allowed; a field without `:` has no type). Empty items are skipped.
 */
export function parseGoalFields(text: string): { name: string; type: string }[] {
  return text
    .split(/[,;\n]/)
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const colon = item.indexOf(":");
      if (colon < 0) return { name: item, type: "" };
      return { name: item.slice(0, colon).trim(), type: item.slice(colon + 1).replace(/\s+/g, "") };
    })
    .filter((f) => f.name || f.type);
}

/** Whether text typed or pasted in a name box is a list of fields to split into rows. */
export function looksLikeFieldList(text: string): boolean {
  return /[:,;\n]/.test(text.trim());
}

const FIELD_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const FIELD_TYPE = /^[A-Za-z_][A-Za-z0-9_.]*(\[\])?$/;

/** What is wrong with each row (by key), if anything; empty rows are ignored. */
export function fieldProblems(rows: FieldRow[], typeRequired: boolean): Map<number, string> {
  const out = new Map<number, string>();
  const seen = new Set<string>();
  for (const r of rows) {
    const name = r.name.trim();
    const type = r.type.trim();
    if (!name && !type) continue;
    if (!name) out.set(r.key, "Give the field a name.");
    else if (!FIELD_NAME.test(name)) out.set(r.key, `\`${name}\` is not a field name: letters, digits and _ (not first).`);
    else if (seen.has(name)) out.set(r.key, `\`${name}\` is listed twice.`);
    else if (typeRequired && !type) out.set(r.key, `Give \`${name}\` a type (string, int64, boolean, a message of the catalog …).`);
    else if (type && !FIELD_TYPE.test(type)) out.set(r.key, `\`${type}\` is not a type: a scalar, a catalog message or enum, \`[]\` after it for a list.`);
    seen.add(name);
  }
  return out;
}

/** The rows that say something, trimmed. */
export function goalFields(rows: FieldRow[]): { name: string; type: string }[] {
  return rows.map((r) => ({ name: r.name.trim(), type: r.type.trim() })).filter((r) => r.name || r.type);
}

export interface GenerateForm {
  goal: string;
  inputs: FieldRow[];
  outputs: FieldRow[];
  useActions: string[];
  endWith: string;
  name: string;
  limit: string;
  offline: boolean;
}

export function emptyGenerateForm(): GenerateForm {
  return { goal: "", inputs: [fieldRow()], outputs: [fieldRow()], useActions: [], endWith: "", name: "", limit: "5", offline: false };
}

export const MAX_CANDIDATES = 20;

/** Why the form cannot be sent as is (the server checks the rest), or null. */
export function formProblem(f: GenerateForm): string | null {
  if (fieldProblems(f.inputs, false).size > 0) return "Fix the inputs first.";
  if (fieldProblems(f.outputs, false).size > 0) return "Fix the outputs first.";
  const n = Number(f.limit);
  if (f.limit.trim() && (!Number.isInteger(n) || n < 1 || n > MAX_CANDIDATES)) return `Ask for 1 to ${MAX_CANDIDATES} candidates.`;
  if (!f.goal.trim() && goalFields(f.outputs).length === 0 && !f.endWith.trim() && f.useActions.length === 0) {
    return "Say what the pattern should do: the goal in words, outputs, actions to use or the action to end with.";
  }
  return null;
}

export function generateRequest(f: GenerateForm): {
  goal: string;
  inputs: { name: string; type: string }[];
  outputs: { name: string; type: string }[];
  useActions: string[];
  endWith: string;
  name: string;
  limit: number;
  offline: boolean;
} {
  const n = Number(f.limit);
  return {
    goal: f.goal.trim(),
    inputs: goalFields(f.inputs),
    outputs: goalFields(f.outputs),
    useActions: [...new Set(f.useActions.map((a) => a.trim()).filter(Boolean))],
    endWith: f.endWith.trim(),
    name: f.name.trim(),
    limit: Number.isInteger(n) && n >= 1 ? Math.min(n, MAX_CANDIDATES) : 0,
    offline: f.offline,
  };
}

/** Candidates best first (a stable sort: the server's order among equal scores). */
export function bestFirst<T extends { score: number }>(xs: readonly T[]): T[] {
  return xs
    .map((x, i) => ({ x, i }))
    .sort((a, b) => b.x.score - a.x.score || a.i - b.i)
    .map((e) => e.x);
}

/** A score as shown: two decimals. */
export function formatScore(score: number): string {
  return score.toFixed(2);
}

/** Milliseconds of a protobuf Duration. */
export function durationMs(d: { seconds: bigint; nanos: number } | undefined): number | undefined {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : undefined;
}

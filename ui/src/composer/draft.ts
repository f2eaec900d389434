// Handing an unregistered document to the composer (a suggestion, a generated candidate): it is
// kept in this tab's sessionStorage under a fresh key and the composer opens `#/composer?draft=KEY`.
// A reload or Back keeps working in the same tab; the last few drafts are kept, older ones dropped.
import { toJson } from "@bufbuild/protobuf";
import { PatternSchema, type Pattern } from "../gen/nexus/v1/nexus_pb";
import { href } from "../router";
import { isObj, SERVER_FIELDS, type PatternDoc } from "../model/types";

const PREFIX = "nexus.composer.draft:";
const INDEX = "nexus.composer.drafts";
export const MAX_DRAFTS = 10;

export interface Draft {
  doc: PatternDoc;
  /** Where it came from, in words: "the suggestion “Run a then b as one pattern”". */
  origin: string;
}

type Store = Pick<Storage, "getItem" | "setItem" | "removeItem">;

function defaultStore(): Store | null {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null;
  }
}

/** A Pattern message as the composer's document (proto JSON, proto field names, no server fields). */
export function docOfPattern(p: Pattern): PatternDoc {
  const json = toJson(PatternSchema, p, { useProtoFieldName: true }) as PatternDoc;
  for (const k of SERVER_FIELDS) delete json[k];
  return json;
}

/** Keeps `draft` and returns its key, or null when the tab cannot store it. */
export function stashDraft(draft: Draft, store: Store | null = defaultStore()): string | null {
  if (!store) return null;
  const key = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  try {
    store.setItem(PREFIX + key, JSON.stringify(draft));
    let keys: string[] = [];
    try {
      const raw = JSON.parse(store.getItem(INDEX) ?? "[]") as unknown;
      if (Array.isArray(raw)) keys = raw.filter((k): k is string => typeof k === "string");
    } catch {
      keys = [];
    }
    keys.push(key);
    while (keys.length > MAX_DRAFTS) store.removeItem(PREFIX + (keys.shift() as string));
    store.setItem(INDEX, JSON.stringify(keys));
    return key;
  } catch {
    return null;
  }
}

/** The draft kept under `key`, or null (another tab's, dropped, or not a document). */
export function readDraft(key: string, store: Store | null = defaultStore()): Draft | null {
  if (!store || !key) return null;
  try {
    const v = JSON.parse(store.getItem(PREFIX + key) ?? "null") as unknown;
    if (!isObj(v) || !isObj(v.doc)) return null;
    return { doc: v.doc, origin: typeof v.origin === "string" ? v.origin : "" };
  } catch {
    return null;
  }
}

export function draftHref(key: string): string {
  return `${href("composer")}?draft=${encodeURIComponent(key)}`;
}

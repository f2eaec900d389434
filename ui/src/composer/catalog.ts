// The catalog the composer builds from: every action of ListServices with its input and output
// fields flattened (the node handles and the forms), and every registered pattern the caller can
// see as a sub-pattern step (`call: pattern:NAME@VERSION`: its input schema in, its output mapping's
// keys out).
import { useEffect, useState } from "react";
import { errorText, nexus } from "../api";
import { PatternSort } from "../gen/nexus/v1/nexus_pb";
import { flattenFields, type FieldInfo } from "../model/schema";
import type { JsonObj } from "../model/types";

export interface ActionInfo {
  name: string;
  service: string;
  method: string;
  inputType: string;
  outputType: string;
  description: string;
  serverStreaming: boolean;
  clientStreaming: boolean;
  inputSchema: JsonObj;
  outputSchema: JsonObj;
  inputFields: FieldInfo[];
  outputFields: FieldInfo[];
}

export interface Catalog {
  actions: ActionInfo[];
  byName: Map<string, ActionInfo>;
}

export type CatalogState = { status: "loading" } | { status: "error"; error: string } | { status: "ready"; catalog: Catalog };

let cache: Promise<Catalog> | null = null;

async function load(): Promise<Catalog> {
  const res = await nexus.listServices({});
  const actions: ActionInfo[] = [];
  for (const s of res.services) {
    for (const a of s.actions) {
      const inputSchema = (a.inputSchema ?? {}) as JsonObj;
      const outputSchema = (a.outputSchema ?? {}) as JsonObj;
      actions.push({
        name: a.name,
        service: a.service || s.name,
        method: a.method,
        inputType: a.inputType,
        outputType: a.outputType,
        description: (a as { description?: string }).description ?? "",
        serverStreaming: a.serverStreaming,
        clientStreaming: a.clientStreaming,
        inputSchema,
        outputSchema,
        inputFields: flattenFields(inputSchema, 3),
        outputFields: flattenFields(outputSchema, 3),
      });
    }
  }
  actions.sort((x, y) => x.name.localeCompare(y.name));
  const patterns = await subPatterns();
  actions.push(...patterns);
  const byName = new Map(actions.map((a) => [a.name, a]));
  // `pattern:NAME` (no version) calls the latest: the listed version is the latest.
  for (const p of patterns) byName.set(`pattern:${p.method}`, p);
  return { actions, byName };
}

/** The service name the palette groups sub-patterns under. */
export const PATTERNS_GROUP = "Patterns";

/** Registered patterns as callable steps (latest versions, at most 500, newest names first). */
async function subPatterns(): Promise<ActionInfo[]> {
  const out: ActionInfo[] = [];
  let pageToken = "";
  try {
    for (let page = 0; page < 5; page++) {
      const res = await nexus.listPatterns({ pageSize: 100, pageToken, sort: PatternSort.NAME });
      for (const p of res.patterns) {
        const inputSchema = (p.input ?? { type: "object" }) as JsonObj;
        const outputKeys = Object.keys((p.output ?? {}) as JsonObj);
        const outputSchema: JsonObj = { type: "object", properties: Object.fromEntries(outputKeys.map((k) => [k, {}])) };
        out.push({
          name: `pattern:${p.name}@${p.version}`,
          service: PATTERNS_GROUP,
          method: p.name,
          inputType: `${p.name} input`,
          outputType: `${p.name}@${p.version} output`,
          description: p.description,
          serverStreaming: false,
          clientStreaming: false,
          inputSchema,
          outputSchema,
          inputFields: flattenFields(inputSchema, 3),
          outputFields: flattenFields(outputSchema, 3),
        });
      }
      if (!res.nextPageToken) break;
      pageToken = res.nextPageToken;
    }
  } catch {
    // Patterns are an extra: the actions alone still make a catalog.
  }
  return out;
}

/** ListServices once per page load (shared by every composer mount); retried after an error. */
export function useCatalog(): CatalogState {
  const [state, setState] = useState<CatalogState>({ status: "loading" });
  useEffect(() => {
    let live = true;
    if (!cache) cache = load();
    cache.then(
      (catalog) => live && setState({ status: "ready", catalog }),
      (err) => {
        cache = null;
        if (live) setState({ status: "error", error: errorText(err) });
      },
    );
    return () => {
      live = false;
    };
  }, []);
  return state;
}

// The catalog the composer builds from: every action of ListServices with its input and output
// fields flattened (the node handles and the forms).
import { useEffect, useState } from "react";
import { errorText, nexus } from "../api";
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
  return { actions, byName: new Map(actions.map((a) => [a.name, a])) };
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

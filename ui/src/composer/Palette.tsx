// The actions of the catalog, searchable: drag one onto the canvas, or focus it and press Enter
// (or click it) to add a step.
import { memo, useMemo, useState, type RefObject } from "react";
import { PATTERNS_GROUP, type ActionInfo, type CatalogState } from "./catalog";

export const DRAG_TYPE = "application/x-nexus-action";

export const Palette = memo(function Palette(props: { catalog: CatalogState; onAdd: (action: string, byKeyboard: boolean) => void; searchRef: RefObject<HTMLInputElement | null> }) {
  const [q, setQ] = useState("");
  const { catalog } = props;
  const groups = useMemo(() => {
    if (catalog.status !== "ready") return [];
    const words = q.toLowerCase().split(/\s+/).filter(Boolean);
    const match = (a: ActionInfo) => {
      const hay = `${a.name} ${a.description} ${a.inputType} ${a.outputType}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    };
    const by = new Map<string, ActionInfo[]>();
    for (const a of catalog.catalog.actions) {
      if (!match(a)) continue;
      const list = by.get(a.service) ?? [];
      list.push(a);
      by.set(a.service, list);
    }
    return [...by.entries()];
  }, [catalog, q]);
  return (
    <aside className="palette" aria-label="Actions">
      <h2>Actions</h2>
      <label className="search">
        <span className="sr-only">Search actions</span>
        <input ref={props.searchRef} type="search" placeholder="Search actions  ( / )" value={q} onChange={(e) => setQ(e.target.value)} aria-label="Search actions" />
      </label>
      {catalog.status === "loading" && <p className="muted">Loading the catalog…</p>}
      {catalog.status === "error" && (
        <p role="alert" className="error">
          {catalog.error}
        </p>
      )}
      {catalog.status === "ready" && groups.length === 0 && <p className="muted">{q ? `No action matches “${q}”.` : "The catalog is empty: no backend is plugged in."}</p>}
      <div className="groups">
        {groups.map(([service, actions]) => (
          <section key={service} aria-label={service}>
            <h3 title={service}>{service.split(".").slice(-1)[0]}</h3>
            <ul>
              {actions.map((a) => (
                <li key={a.name}>
                  <button
                    type="button"
                    className="action"
                    draggable
                    data-action={a.name}
                    aria-label={a.service === PATTERNS_GROUP ? `Add sub-pattern ${a.method}` : `Add ${a.method} (${a.service})`}
                    title={`${a.name}${a.description ? `\n${a.description}` : ""}\nDrag onto the canvas, or press Enter to add it.`}
                    onDragStart={(e) => {
                      e.dataTransfer.setData(DRAG_TYPE, a.name);
                      e.dataTransfer.setData("text/plain", a.name);
                      e.dataTransfer.effectAllowed = "copy";
                    }}
                    onClick={(e) => props.onAdd(a.name, e.detail === 0)}
                  >
                    <span className="m">{a.method}</span>
                    {a.serverStreaming && <span className="tag">stream</span>}
                    <span className="io">
                      {a.service === PATTERNS_GROUP ? a.name.replace(/^pattern:/, "") : `${a.inputType.split(".").pop()} → ${a.outputType.split(".").pop()}`}
                    </span>
                  </button>
                </li>
              ))}
            </ul>
          </section>
        ))}
      </div>
    </aside>
  );
});

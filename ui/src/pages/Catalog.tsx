// The catalog: every backend service and its actions (ListServices), searchable by service,
// method and field name; an action's request and response messages with their fields, types,
// enums, repeated and map fields, nested messages (expandable) and proto comments.
import { useEffect, useMemo, useState, type ReactNode } from "react";
import { errorText, nexus } from "../api";
import type { Action, Pattern, Service } from "../gen/nexus/v1/nexus_pb";
import { href, type Route } from "../router";
import { describeMessage, example, fieldNames, type FieldInfo, type MessageInfo } from "./catalogSchema";
import "./catalog.css";

interface IndexedAction {
  action: Action;
  service: Service;
  input: MessageInfo;
  output: MessageInfo;
  /** Lower-cased field names of the request and the response (nested included). */
  fields: string[];
}

function terms(q: string): string[] {
  return q.toLowerCase().split(/\s+/).filter(Boolean);
}

/** Why an action matches every term: null when it does not; the matching field names otherwise. */
function matchAction(a: IndexedAction, ts: string[]): string[] | null {
  if (ts.length === 0) return [];
  const hay = `${a.action.name} ${a.service.backend} ${a.action.inputType} ${a.action.outputType}`.toLowerCase();
  const fieldHits = new Set<string>();
  for (const t of ts) {
    const inName = hay.includes(t);
    const hits = a.fields.filter((f) => f.includes(t));
    if (!inName && hits.length === 0) return null;
    if (!inName) hits.forEach((h) => fieldHits.add(h));
  }
  return [...fieldHits];
}

function streaming(a: Action): string {
  if (a.clientStreaming && a.serverStreaming) return "bidi streaming";
  if (a.serverStreaming) return "server streaming";
  if (a.clientStreaming) return "client streaming";
  return "unary";
}

/** The method's proto comment (empty when the backend's descriptors carry no source info). */
function actionDescription(a: Action): string {
  return a.description;
}

function shortName(full: string): string {
  return full.slice(full.lastIndexOf(".") + 1);
}

function catalogHref(action: string | undefined, q: string): string {
  const base = action ? href("catalog", action) : href("catalog");
  return q ? `${base}?q=${encodeURIComponent(q)}` : base;
}

export default function Catalog({ route }: { route: Route }) {
  const [services, setServices] = useState<Service[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [reload, setReload] = useState(0);
  const urlQ = route.query.get("q") ?? "";
  const [q, setQ] = useState(urlQ);
  useEffect(() => setQ(urlQ), [urlQ]);

  useEffect(() => {
    let live = true;
    setError(null);
    nexus
      .listServices({})
      .then((r) => live && setServices(r.services))
      .catch((e) => live && setError(errorText(e)));
    return () => {
      live = false;
    };
  }, [reload]);

  const index: IndexedAction[] = useMemo(() => {
    const out: IndexedAction[] = [];
    for (const service of services ?? []) {
      for (const action of service.actions) {
        const input = describeMessage(action.inputSchema);
        const output = describeMessage(action.outputSchema);
        const names = new Set([...fieldNames(input), ...fieldNames(output)]);
        out.push({ action, service, input, output, fields: [...names].map((n) => n.toLowerCase()) });
      }
    }
    return out;
  }, [services]);

  const ts = useMemo(() => terms(q), [q]);
  const matches = useMemo(() => {
    const m = new Map<string, string[]>();
    for (const a of index) {
      const why = matchAction(a, ts);
      if (why) m.set(a.action.name, why);
    }
    return m;
  }, [index, ts]);

  const onSearch = (value: string) => {
    setQ(value);
    // Keep the search in the address (shareable, survives a reload) without a history entry each key.
    const base = route.rest[0] ? href("catalog", route.rest[0]) : href("catalog");
    window.history.replaceState(null, "", value ? `${base}?q=${encodeURIComponent(value)}` : base);
  };

  const selectedName = route.rest[0];
  const selected = index.find((a) => a.action.name === selectedName);
  const visibleServices = (services ?? []).filter((s) => s.actions.some((a) => matches.has(a.name)));

  return (
    <div className="catalog">
      <aside className="catalog-list" aria-label="Services and actions">
        <h1>Catalog</h1>
        <label className="catalog-search">
          <span>Search services, methods and fields</span>
          <input type="search" value={q} placeholder="e.g. user, SendEmail, display_name" onChange={(e) => onSearch(e.target.value)} />
        </label>
        {error && (
          <div role="alert" className="error">
            {error}{" "}
            <button type="button" onClick={() => setReload((n) => n + 1)}>
              Retry
            </button>
          </div>
        )}
        {services === null && !error && <p className="muted" aria-busy="true">Loading the catalog…</p>}
        {services !== null && (
          <p className="muted" role="status" data-testid="catalog-count">
            {ts.length === 0
              ? `${index.length} actions in ${services.length} services`
              : `${matches.size} of ${index.length} actions match`}
          </p>
        )}
        {services !== null && services.length === 0 && <p className="muted">No backend service is plugged in.</p>}
        {services !== null && services.length > 0 && visibleServices.length === 0 && (
          <p className="muted">
            Nothing matches “{q}”.{" "}
            <button type="button" onClick={() => onSearch("")}>
              Clear the search
            </button>
          </p>
        )}
        {visibleServices.map((s) => (
          <section key={s.name} className="catalog-service" aria-label={s.name} data-testid={`service-${s.name}`}>
            <h2 title={s.name}>{shortName(s.name)}</h2>
            <div className="catalog-service-meta muted">
              <code>{s.name}</code> · {s.backend} · {s.source}
            </div>
            <ul>
              {s.actions
                .filter((a) => matches.has(a.name))
                .map((a) => {
                  const why = matches.get(a.name) ?? [];
                  return (
                    <li key={a.name}>
                      <a href={catalogHref(a.name, q)} aria-current={a.name === selectedName ? "page" : undefined}>
                        <span className="catalog-method" title={actionDescription(a) || undefined}>
                          {a.method}
                        </span>
                        {a.serverStreaming || a.clientStreaming ? <span className="tag tag-stream">{streaming(a)}</span> : null}
                      </a>
                      {why.length > 0 && <div className="catalog-why muted">fields: {why.slice(0, 4).join(", ")}</div>}
                    </li>
                  );
                })}
            </ul>
          </section>
        ))}
      </aside>
      <section className="catalog-detail">
        {selectedName && services !== null && !selected && (
          <div role="alert" className="error">
            No action `{selectedName}` in the catalog. <a href={href("catalog")}>All services</a>
          </div>
        )}
        {selected ? (
          <ActionDetail key={selected.action.name} a={selected} terms={ts} />
        ) : (
          services !== null && !selectedName && <Overview services={ts.length ? visibleServices : services} q={q} />
        )}
      </section>
    </div>
  );
}

function Overview({ services, q }: { services: Service[]; q: string }) {
  return (
    <div className="panel">
      <h2>Services</h2>
      <p className="muted">Pick an action to see its request and response messages.</p>
      <table className="catalog-services">
        <thead>
          <tr>
            <th scope="col">Service</th>
            <th scope="col">Backend</th>
            <th scope="col">Endpoint</th>
            <th scope="col">Source</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {services.map((s) => (
            <tr key={s.name} data-testid={`service-row-${s.name}`}>
              <td>
                <code>{s.name}</code>
              </td>
              <td>{s.backend}</td>
              <td>
                <code>{s.endpoint}</code>
              </td>
              <td>{s.source}</td>
              <td>
                {s.actions.map((a, i) => (
                  <span key={a.name}>
                    {i > 0 && ", "}
                    <a href={catalogHref(a.name, q)}>{a.method}</a>
                  </span>
                ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function ActionDetail({ a, terms }: { a: IndexedAction; terms: string[] }) {
  const { action, service } = a;
  const [users, setUsers] = useState<Pattern[] | null>(null);
  const [more, setMore] = useState(false);
  const [usersError, setUsersError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    nexus
      .listPatterns({ action: action.name, pageSize: 8 })
      .then((r) => {
        if (!live) return;
        setUsers(r.patterns);
        setMore(r.nextPageToken !== "");
      })
      .catch((e) => live && setUsersError(errorText(e)));
    return () => {
      live = false;
    };
  }, [action.name]);

  return (
    <article className="catalog-action" aria-labelledby="action-title">
      <header className="panel">
        <h2 id="action-title">
          {service.name.slice(service.name.lastIndexOf(".") + 1)}/{action.method}
        </h2>
        <div className="catalog-action-name">
          <code data-testid="action-name">{action.name}</code> <span className="tag">{streaming(action)}</span>
        </div>
        {actionDescription(action) && (
          <p className="catalog-comment catalog-action-comment" data-testid="action-description">
            <Comment text={actionDescription(action)} />
          </p>
        )}
        <dl className="catalog-facts">
          <dt>Service</dt>
          <dd>
            <code>{service.name}</code>
          </dd>
          <dt>Backend</dt>
          <dd>
            {service.backend} · <code>{service.endpoint}</code> · {service.source}
          </dd>
          <dt>Request</dt>
          <dd>
            <code>{action.inputType}</code>
          </dd>
          <dt>Response</dt>
          <dd>
            <code>
              {action.serverStreaming ? "stream " : ""}
              {action.outputType}
            </code>
          </dd>
        </dl>
        <nav className="catalog-links" aria-label="About this action">
          <a className="button primary" href={`${href("composer")}?add=${encodeURIComponent(action.name)}`}>
            Use in composer
          </a>
          <a className="button" href={`${href("marketplace")}?action=${encodeURIComponent(action.name)}`}>
            Patterns using it
          </a>
          <a className="button" href={`${href("graph")}?impact=${encodeURIComponent(action.name)}`}>
            Impact
          </a>
        </nav>
        <div className="catalog-used-by">
          {usersError && (
            <span role="alert" className="error">
              {usersError}
            </span>
          )}
          {users === null && !usersError && <span className="muted">Looking for patterns that call it…</span>}
          {users !== null && users.length === 0 && <span className="muted">No pattern you can see calls it yet.</span>}
          {users !== null && users.length > 0 && (
            <>
              <span className="muted">Called by </span>
              {users.map((p, i) => (
                <span key={p.name}>
                  {i > 0 && ", "}
                  <a href={href("marketplace", p.name)}>{p.name}</a>
                </span>
              ))}
              {more && (
                <>
                  {" "}
                  <a href={`${href("marketplace")}?action=${encodeURIComponent(action.name)}`}>and more…</a>
                </>
              )}
            </>
          )}
        </div>
      </header>
      <MessageView label="Request" info={a.input} typeName={action.inputType} terms={terms} />
      <MessageView
        label={action.serverStreaming ? "Response (each streamed message)" : "Response"}
        info={a.output}
        typeName={action.outputType}
        terms={terms}
      />
    </article>
  );
}

function hasMatch(info: MessageInfo | undefined, terms: string[], depth = 0): boolean {
  if (!info || terms.length === 0 || depth > 8) return false;
  return info.fields.some((f) => terms.some((t) => f.name.toLowerCase().includes(t)) || hasMatch(f.message, terms, depth + 1));
}

function MessageView({ label, info, typeName, terms }: { label: string; info: MessageInfo; typeName: string; terms: string[] }) {
  const id = `msg-${label.split(" ")[0].toLowerCase()}`;
  const [all, setAll] = useState<boolean | null>(null);
  const nested = info.fields.some((f) => f.message && f.kind !== "recursive");
  const ex = useMemo(() => JSON.stringify(example(info), null, 2), [info]);
  return (
    <section className="panel catalog-message" aria-labelledby={id} data-testid={`message-${label.split(" ")[0].toLowerCase()}`}>
      <div className="catalog-message-head">
        <h3 id={id}>
          {label} <code>{typeName}</code>
        </h3>
        {nested && (
          <button type="button" onClick={() => setAll((v) => !v)}>
            {all ? "Collapse all" : "Expand all"}
          </button>
        )}
      </div>
      {info.description && (
        <p className="catalog-comment">
          <Comment text={info.description} />
        </p>
      )}
      {info.fields.length === 0 ? (
        <p className="muted">No fields (an empty message).</p>
      ) : (
        <table className="catalog-fields">
          <thead>
            <tr>
              <th scope="col">Field</th>
              <th scope="col">Type</th>
              <th scope="col">Description</th>
            </tr>
          </thead>
          <tbody>
            <FieldRows fields={info.fields} depth={0} terms={terms} all={all} path={id} />
          </tbody>
        </table>
      )}
      {info.fields.length > 0 && (
        <details className="catalog-example">
          <summary>Example JSON</summary>
          <pre>{ex}</pre>
        </details>
      )}
    </section>
  );
}

/** A proto comment, with `backticked` words as code. */
function Comment({ text }: { text: string }) {
  const parts = text.split(/`([^`\n]+)`/);
  return <>{parts.map((p, i) => (i % 2 === 1 ? <code key={i}>{p}</code> : p))}</>;
}

function highlight(name: string, terms: string[]): ReactNode {
  const lower = name.toLowerCase();
  const t = terms.find((x) => lower.includes(x));
  if (!t) return name;
  const i = lower.indexOf(t);
  return (
    <>
      {name.slice(0, i)}
      <mark>{name.slice(i, i + t.length)}</mark>
      {name.slice(i + t.length)}
    </>
  );
}

function FieldRows({ fields, depth, terms, all, path }: { fields: FieldInfo[]; depth: number; terms: string[]; all: boolean | null; path: string }) {
  return (
    <>
      {fields.map((f) => (
        <FieldRow key={f.name} f={f} depth={depth} terms={terms} all={all} path={`${path}.${f.name}`} />
      ))}
    </>
  );
}

function FieldRow({ f, depth, terms, all, path }: { f: FieldInfo; depth: number; terms: string[]; all: boolean | null; path: string }) {
  const expandable = Boolean(f.message) && f.kind !== "recursive" && (f.message?.fields.length ?? 0) > 0;
  const [open, setOpen] = useState(() => hasMatch(f.message, terms));
  useEffect(() => {
    if (all !== null) setOpen(all);
  }, [all]);
  // A search for a nested field opens the messages on its way.
  const termsKey = terms.join(" ");
  useEffect(() => {
    if (termsKey && hasMatch(f.message, termsKey.split(" "))) setOpen(true);
  }, [termsKey, f.message]);
  const fieldPath = path.split(".").slice(1).join(".");
  return (
    <>
      <tr data-testid={`field-${fieldPath}`} className={depth > 0 ? "nested" : undefined}>
        <td style={{ paddingLeft: 8 + depth * 18 }} className="catalog-field-name">
          {expandable ? (
            <button
              type="button"
              className="catalog-toggle"
              aria-expanded={open}
              aria-label={`${open ? "Collapse" : "Expand"} ${f.name}`}
              onClick={() => setOpen((v) => !v)}
            >
              <span aria-hidden="true">{open ? "▾" : "▸"}</span>
            </button>
          ) : (
            <span className="catalog-toggle-space" aria-hidden="true" />
          )}
          <code>{highlight(f.name, terms)}</code>
        </td>
        <td>
          <code className={`catalog-type kind-${f.kind}`}>{f.type}</code>
          {f.kind === "enum" && <span className="tag">enum</span>}
          {f.enumValues && f.enumValues.length > 0 && (
            <ul className="catalog-enum" aria-label={`Values of ${f.name}`}>
              {f.enumValues.map((v, i) => (
                <li key={v} title={f.enumDescriptions?.[i] || undefined}>
                  <code>
                    {v}
                    {f.enumNumbers ? ` = ${f.enumNumbers[i]}` : ""}
                  </code>
                  {f.enumDescriptions?.[i] && <span className="catalog-enum-doc"> {f.enumDescriptions[i]}</span>}
                </li>
              ))}
            </ul>
          )}
        </td>
        <td>
          {f.description && (
            <span className="catalog-comment">
              <Comment text={f.description} />
            </span>
          )}
          {f.note && <span className="muted catalog-note">{f.description ? " · " : ""}{f.note}</span>}
        </td>
      </tr>
      {expandable && open && f.message && (
        <FieldRows fields={f.message.fields} depth={depth + 1} terms={terms} all={all} path={path} />
      )}
    </>
  );
}

// The marketplace: search registered patterns (text, tag, owner, action used; sorted; paged), and a
// pattern's page — its versions with deprecation, the selected version's graph and YAML, a
// step-level diff of two versions (or against the pattern it was forked from) drawn on the graph,
// fork with lineage, star, and sharing.
import { toJson } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import YAML from "yaml";
import { errorText, nexus } from "../api";
import { PatternGraphView } from "../components/PatternGraphView";
import { changeKindName, diffSteps, splitRef, stepHighlights } from "../components/diff";
import {
  PatternSchema,
  PatternSort,
  type ListPatternVersionsResponse,
  type Pattern,
  type PatternChange,
  type QueryGraphResponse,
} from "../gen/nexus/v1/nexus_pb";
import { href, navigate, type Route } from "../router";
import { useSession } from "../session";
import "./marketplace.css";

export default function Marketplace({ route }: { route: Route }) {
  const name = route.rest[0];
  return name ? <PatternPage key={name} name={name} route={route} /> : <PatternSearch route={route} />;
}

// ---------------------------------------------------------------------------------------------
// Search

const SORTS: { value: string; label: string; sort: PatternSort }[] = [
  { value: "relevance", label: "Relevance", sort: PatternSort.RELEVANCE },
  { value: "popularity", label: "Popularity (stars, runs)", sort: PatternSort.POPULARITY },
  { value: "name", label: "Name", sort: PatternSort.NAME },
  { value: "recent", label: "Recently updated", sort: PatternSort.RECENT },
];

interface Filters {
  q: string;
  tag: string;
  owner: string;
  action: string;
  sort: string;
}

const FILTER_KEYS = ["q", "tag", "owner", "action", "sort"] as const;

function filtersFrom(query: URLSearchParams): Filters {
  return {
    q: query.get("q") ?? "",
    tag: query.get("tag") ?? "",
    owner: query.get("owner") ?? "",
    action: query.get("action") ?? "",
    sort: query.get("sort") ?? "",
  };
}

function searchHref(f: Partial<Filters>): string {
  const params = new URLSearchParams();
  for (const k of FILTER_KEYS) {
    const v = f[k]?.trim();
    if (v) params.set(k, v);
  }
  const s = params.toString();
  return s ? `${href("marketplace")}?${s}` : href("marketplace");
}

const PAGE_SIZE = 20;

function count(n: bigint | number): string {
  return Number(n).toLocaleString("en");
}

function when(ts: Timestamp | undefined): { text: string; iso: string } | null {
  if (!ts) return null;
  const d = timestampDate(ts);
  return { text: d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }), iso: d.toISOString() };
}

function PatternSearch({ route }: { route: Route }) {
  const urlKey = FILTER_KEYS.map((k) => route.query.get(k) ?? "").join("\u0000");
  const [filters, setFilters] = useState<Filters>(() => filtersFrom(route.query));
  const [applied, setApplied] = useState<Filters>(filters);
  const [tokens, setTokens] = useState<string[]>([""]);
  const [result, setResult] = useState<{ patterns: Pattern[]; next: string } | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [actions, setActions] = useState<string[]>([]);
  const seq = useRef(0);

  // A link or Back/Forward changed the address: it wins over the form.
  useEffect(() => {
    const f = filtersFrom(route.query);
    setFilters(f);
    setApplied(f);
    setTokens([""]);
  }, [urlKey]);

  // Typing: search 250 ms after the last key, and keep the address in step (no history entry per key).
  useEffect(() => {
    const same = FILTER_KEYS.every((k) => filters[k] === applied[k]);
    if (same) return;
    const t = setTimeout(() => {
      setApplied(filters);
      setTokens([""]);
      window.history.replaceState(null, "", searchHref(filters));
    }, 250);
    return () => clearTimeout(t);
  }, [filters, applied]);

  const token = tokens[tokens.length - 1];
  useEffect(() => {
    const mine = ++seq.current;
    setLoading(true);
    setError(null);
    nexus
      .listPatterns({
        query: applied.q.trim(),
        tag: applied.tag.trim(),
        owner: applied.owner.trim(),
        action: applied.action.trim(),
        sort: SORTS.find((s) => s.value === applied.sort)?.sort ?? PatternSort.UNSPECIFIED,
        pageSize: PAGE_SIZE,
        pageToken: token,
      })
      .then((r) => {
        if (mine !== seq.current) return;
        setResult({ patterns: r.patterns, next: r.nextPageToken });
      })
      .catch((e) => mine === seq.current && setError(errorText(e)))
      .finally(() => mine === seq.current && setLoading(false));
  }, [applied, token]);

  // Action names for the action filter's suggestions.
  useEffect(() => {
    let live = true;
    nexus
      .listServices({})
      .then((r) => live && setActions(r.services.flatMap((s) => s.actions.map((a) => a.name))))
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, []);

  const set = (k: keyof Filters, v: string) => setFilters((f) => ({ ...f, [k]: v }));
  const applyNow = (f: Filters) => {
    setFilters(f);
    setApplied(f);
    setTokens([""]);
    window.history.replaceState(null, "", searchHref(f));
  };
  const filtered = FILTER_KEYS.some((k) => k !== "sort" && applied[k]);

  return (
    <div className="market">
      <h1>Marketplace</h1>
      <form
        className="market-filters panel"
        role="search"
        aria-label="Search patterns"
        onSubmit={(e) => {
          e.preventDefault();
          applyNow(filters);
        }}
      >
        <label className="grow">
          <span>Search</span>
          <input type="search" value={filters.q} placeholder="name, description or tag" onChange={(e) => set("q", e.target.value)} />
        </label>
        <label>
          <span>Tag</span>
          <input value={filters.tag} placeholder="e.g. onboarding" onChange={(e) => set("tag", e.target.value)} />
        </label>
        <label>
          <span>Owner</span>
          <input value={filters.owner} placeholder="subject" onChange={(e) => set("owner", e.target.value)} />
        </label>
        <label className="grow">
          <span>Calls action</span>
          <input
            value={filters.action}
            list="market-actions"
            placeholder="package.Service/Method"
            onChange={(e) => set("action", e.target.value)}
          />
          <datalist id="market-actions">
            {actions.map((a) => (
              <option key={a} value={a} />
            ))}
          </datalist>
        </label>
        <label>
          <span>Sort</span>
          <select
            value={filters.sort || "relevance"}
            onChange={(e) => applyNow({ ...filters, sort: e.target.value === "relevance" ? "" : e.target.value })}
          >
            {SORTS.map((s) => (
              <option key={s.value} value={s.value}>
                {s.label}
              </option>
            ))}
          </select>
        </label>
        <div className="market-filter-buttons">
          <button type="submit" className="primary">
            Search
          </button>
          <button type="button" onClick={() => applyNow({ q: "", tag: "", owner: "", action: "", sort: "" })}>
            Clear
          </button>
        </div>
      </form>

      {error && (
        <div role="alert" className="error market-error">
          {error}
        </div>
      )}
      <div className="market-results-head">
        <p role="status" className="muted" aria-live="polite">
          {loading
            ? "Searching…"
            : result
              ? result.patterns.length === 0
                ? ""
                : `Page ${tokens.length}: ${result.patterns.length} pattern${result.patterns.length === 1 ? "" : "s"}${result.next ? " (more on the next page)" : ""}`
              : ""}
        </p>
      </div>
      {!loading && result && result.patterns.length === 0 && !error && (
        <div className="panel market-empty">
          <p>{filtered ? "No pattern matches these filters." : "No pattern is registered yet (or none you can see)."}</p>
          {filtered && (
            <button type="button" onClick={() => applyNow({ q: "", tag: "", owner: "", action: "", sort: applied.sort })}>
              Clear the filters
            </button>
          )}
          {!filtered && <a href={href("composer")}>Compose one</a>}
        </div>
      )}
      {result && result.patterns.length > 0 && (
        <ul className="market-results" aria-label="Patterns" aria-busy={loading}>
          {result.patterns.map((p) => (
            <PatternCard key={p.name} p={p} onFilter={(k, v) => applyNow({ ...filters, [k]: v })} />
          ))}
        </ul>
      )}
      {result && (tokens.length > 1 || result.next) && (
        <nav className="market-pager" aria-label="Pages">
          <button type="button" disabled={tokens.length <= 1 || loading} onClick={() => setTokens((t) => t.slice(0, -1))}>
            ← Previous
          </button>
          <span className="muted">Page {tokens.length}</span>
          <button type="button" disabled={!result.next || loading} onClick={() => setTokens((t) => [...t, result.next])}>
            Next →
          </button>
        </nav>
      )}
    </div>
  );
}

function PatternCard({ p, onFilter }: { p: Pattern; onFilter: (k: keyof Filters, v: string) => void }) {
  const registered = when(p.registeredAt);
  return (
    <li className="market-card" data-testid={`pattern-card-${p.name}`}>
      <div className="market-card-head">
        <h2>
          <a href={href("marketplace", p.name)}>{p.name}</a>
        </h2>
        <span className="market-version" title="Latest version">
          v{p.version}
        </span>
        {p.deprecated && (
          <span className="badge badge-deprecated" title="Every version is deprecated">
            deprecated
          </span>
        )}
        <span className={`badge badge-${p.visibility}`}>{p.visibility}</span>
        <span className="market-card-stats">
          <span title="Stars" aria-label={`${count(p.stars)} stars`} data-testid="stars">
            ★ {count(p.stars)}
          </span>
          <span title="Executions of this version" aria-label={`${count(p.executions)} executions`}>
            ▶ {count(p.executions)}
          </span>
        </span>
      </div>
      <p className="market-desc">{p.description || <span className="muted">No description.</span>}</p>
      <div className="market-card-meta">
        <span>
          by{" "}
          <button type="button" className="linklike" aria-label={`Patterns by ${p.owner}`} onClick={() => onFilter("owner", p.owner)}>
            {p.owner}
          </button>
          {p.tenant && <span className="muted"> ({p.tenant})</span>}
        </span>
        {p.tags.length > 0 && (
          <span className="market-tags">
            {p.tags.map((t) => (
              <button key={t} type="button" className="tag" aria-label={`Patterns tagged ${t}`} onClick={() => onFilter("tag", t)}>
                #{t}
              </button>
            ))}
          </span>
        )}
        {p.forkedFrom && (
          <span>
            forked from <a href={href("marketplace", splitRef(p.forkedFrom).name)}>{p.forkedFrom}</a>
          </span>
        )}
        <span className="muted">
          {p.steps.length} step{p.steps.length === 1 ? "" : "s"}
        </span>
        {registered && (
          <span className="muted">
            <time dateTime={registered.iso}>{registered.text}</time>
          </span>
        )}
      </div>
    </li>
  );
}

// ---------------------------------------------------------------------------------------------
// One pattern


/** The registrable document of a stored version: what the server sets is left out. */
function documentYaml(p: Pattern): string {
  const json = toJson(PatternSchema, p, { useProtoFieldName: true }) as Record<string, unknown>;
  for (const k of ["registered_at", "tenant", "forked_from", "deprecated", "stars", "executions"]) delete json[k];
  return YAML.stringify(json, { lineWidth: 0 });
}

function detailHref(name: string, params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `${href("marketplace", name)}?${s}` : href("marketplace", name);
}

function PatternPage({ name, route }: { name: string; route: Route }) {
  const session = useSession();
  const canAuthor = session.can("author");
  const canRun = session.can("run");

  const [info, setInfo] = useState<ListPatternVersionsResponse | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [reload, setReload] = useState(0);
  const refresh = useCallback(() => setReload((n) => n + 1), []);

  useEffect(() => {
    let live = true;
    nexus
      .listPatternVersions({ name })
      .then((r) => {
        if (!live) return;
        setInfo(r);
        setLoadError(null);
      })
      .catch((e) => live && setLoadError(errorText(e)));
    return () => {
      live = false;
    };
  }, [name, reload]);

  const qVersion = route.query.get("version") ?? "";
  const from = route.query.get("from") ?? "";
  const to = route.query.get("to") ?? "";
  const versions = info?.versions ?? [];
  const version =
    (qVersion && versions.some((v) => v.version === qVersion) ? qVersion : "") ||
    info?.latest ||
    versions[versions.length - 1]?.version ||
    "";
  const current = versions.find((v) => v.version === version);

  if (loadError && !info) {
    return (
      <div className="market">
        <p>
          <a href={href("marketplace")}>← Marketplace</a>
        </p>
        <h1>{name}</h1>
        <div role="alert" className="error">
          {loadError}
        </div>
      </div>
    );
  }
  if (!info) {
    return (
      <div className="market">
        <p>
          <a href={href("marketplace")}>← Marketplace</a>
        </p>
        <h1>{name}</h1>
        <p className="muted" aria-busy="true">
          Loading…
        </p>
      </div>
    );
  }

  const pageLink = `${window.location.origin}${window.location.pathname}${href("marketplace", name)}`;
  return (
    <div className="market market-page">
      <p className="market-back">
        <a href={href("marketplace")}>← Marketplace</a>
      </p>
      <header className="market-page-head">
        <div>
          <h1>
            {name}
            {version && <span className="market-version"> v{version}</span>}
            {current?.deprecated && <span className="badge badge-deprecated">deprecated</span>}
            <span className={`badge badge-${info.visibility}`} data-testid="visibility-badge">
              {info.visibility}
            </span>
          </h1>
          <p className="market-desc">{current?.description || <span className="muted">No description.</span>}</p>
          <p className="muted market-owner">
            Owner <strong>{info.owner}</strong> · tenant {info.tenant}
            {info.latest ? (
              <>
                {" "}
                · latest <strong data-testid="latest">{info.latest}</strong>
              </>
            ) : (
              <> · every version is deprecated</>
            )}
            {info.forkedFrom && (
              <>
                {" "}
                ·{" "}
                <span data-testid="forked-from">
                  forked from <a href={detailHref(splitRef(info.forkedFrom).name, { version: splitRef(info.forkedFrom).version })}>{info.forkedFrom}</a>
                </span>
              </>
            )}
          </p>
        </div>
        <div className="market-actions">
          <StarButton name={name} stars={info.stars} starred={info.starred} />
          {version && (
            <>
              <a className="button" href={`${href("composer", name)}?version=${encodeURIComponent(version)}`}>
                Open in composer
              </a>
              {canRun && (
                <a className="button primary" href={`${href("run", name)}?version=${encodeURIComponent(version)}`}>
                  Run
                </a>
              )}
            </>
          )}
          <a className="button" href={`${href("executions")}?pattern=${encodeURIComponent(name)}`}>
            Executions
          </a>
        </div>
      </header>

      <div className="market-page-grid">
        <div className="market-main">
          <Versions info={info} selected={version} canAuthor={canAuthor} onChanged={refresh} route={route} />
          {from && to ? (
            <DiffView name={name} from={from} to={to} version={version} />
          ) : (
            version && <VersionView name={name} version={version} />
          )}
        </div>
        <aside className="market-side">
          <Share name={name} visibility={info.visibility} canAuthor={canAuthor} link={pageLink} onChanged={refresh} />
          {canAuthor && <Fork name={name} versions={info} selected={version} />}
          <Lineage name={name} reload={reload} />
        </aside>
      </div>
    </div>
  );
}

function StarButton({ name, stars, starred: initial }: { name: string; stars: bigint; starred: boolean }) {
  const [starred, setStarred] = useState(initial);
  const [n, setN] = useState(stars);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setN(stars), [stars]);
  useEffect(() => setStarred(initial), [initial]);
  const toggle = async () => {
    setBusy(true);
    setError(null);
    try {
      const r = await nexus.star({ name, unstar: starred });
      setN(r.stars);
      setStarred(r.starred);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <span className="market-star">
      <button type="button" aria-pressed={starred} disabled={busy} onClick={toggle} className={starred ? "starred" : undefined}>
        <span aria-hidden="true">{starred ? "★" : "☆"}</span> {starred ? "Starred" : "Star"}
      </button>
      <span className="market-star-count" data-testid="star-count" aria-label={`${count(n)} stars`}>
        {count(n)}
      </span>
      {error && (
        <span role="alert" className="error">
          {error}
        </span>
      )}
    </span>
  );
}

function Versions({
  info,
  selected,
  canAuthor,
  onChanged,
  route,
}: {
  info: ListPatternVersionsResponse;
  selected: string;
  canAuthor: boolean;
  onChanged: () => void;
  route: Route;
}) {
  const [deprecating, setDeprecating] = useState<string | null>(null);
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState("");
  const name = info.name;
  const list = info.versions;

  const from0 = route.query.get("from") ?? "";
  const to0 = route.query.get("to") ?? "";
  const idx = list.findIndex((v) => v.version === selected);
  const [cmpFrom, setCmpFrom] = useState(from0 && !from0.includes("@") ? from0 : (list[idx - 1]?.version ?? list[0]?.version ?? ""));
  const [cmpTo, setCmpTo] = useState(to0 || selected);
  useEffect(() => {
    if (to0) setCmpTo(to0);
    if (from0 && !from0.includes("@")) setCmpFrom(from0);
  }, [from0, to0]);

  const deprecate = async (version: string, undo: boolean, why: string) => {
    setBusy(true);
    setError(null);
    try {
      const r = await nexus.deprecatePattern({ name, version, reason: why, undo });
      setStatus(
        `${version} ${undo ? "is no longer deprecated" : "deprecated"}; latest is ${r.latest ? r.latest : "none (every version is deprecated)"}.`,
      );
      setDeprecating(null);
      setReason("");
      onChanged();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  const submit = (e: FormEvent, version: string) => {
    e.preventDefault();
    void deprecate(version, false, reason.trim());
  };

  return (
    <section className="panel market-versions" aria-labelledby="versions-title">
      <h2 id="versions-title">Versions</h2>
      {error && (
        <div role="alert" className="error">
          {error}
        </div>
      )}
      <p role="status" className="muted market-status">
        {status}
      </p>
      <table>
        <thead>
          <tr>
            <th scope="col">Version</th>
            <th scope="col">Registered</th>
            <th scope="col">Executions</th>
            <th scope="col">Status</th>
            {canAuthor && <th scope="col">Manage</th>}
          </tr>
        </thead>
        <tbody>
          {[...list].reverse().map((v) => {
            const at = when(v.registeredAt);
            return (
              <tr key={v.version} data-testid={`version-${v.version}`} className={v.version === selected ? "selected" : undefined}>
                <td>
                  <a
                    href={detailHref(name, { version: v.version })}
                    aria-current={v.version === selected ? "true" : undefined}
                    aria-label={`Version ${v.version}`}
                  >
                    {v.version}
                  </a>
                </td>
                <td>{at && <time dateTime={at.iso}>{at.text}</time>}</td>
                <td>{count(v.executions)}</td>
                <td>
                  {v.version === info.latest && <span className="badge badge-latest">latest</span>}
                  {v.deprecated && <span className="badge badge-deprecated">deprecated</span>}
                  {v.deprecated && v.deprecationReason && (
                    <span className="market-reason" data-testid="deprecation-reason">
                      {v.deprecationReason}
                    </span>
                  )}
                </td>
                {canAuthor && (
                  <td>
                    {v.deprecated ? (
                      <button type="button" disabled={busy} onClick={() => deprecate(v.version, true, "")}>
                        Un-deprecate {v.version}
                      </button>
                    ) : deprecating === v.version ? (
                      <form className="market-inline-form" onSubmit={(e) => submit(e, v.version)}>
                        <label>
                          <span>Reason</span>
                          <input autoFocus value={reason} onChange={(e) => setReason(e.target.value)} placeholder="why it should not be used" />
                        </label>
                        <button type="submit" className="primary" disabled={busy}>
                          Deprecate
                        </button>
                        <button type="button" onClick={() => setDeprecating(null)}>
                          Cancel
                        </button>
                      </form>
                    ) : (
                      <button
                        type="button"
                        onClick={() => {
                          setDeprecating(v.version);
                          setReason("");
                        }}
                      >
                        Deprecate {v.version}…
                      </button>
                    )}
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
      {list.length > 1 || info.forkedFrom ? (
        <form
          className="market-compare"
          aria-label="Compare versions"
          onSubmit={(e) => {
            e.preventDefault();
            navigate(detailHref(name, { version: selected, from: cmpFrom, to: cmpTo }));
          }}
        >
          {list.length > 1 && (
            <>
              <label>
                <span>Diff from</span>
                <select value={cmpFrom} onChange={(e) => setCmpFrom(e.target.value)}>
                  {list.map((v) => (
                    <option key={v.version} value={v.version}>
                      {v.version}
                    </option>
                  ))}
                </select>
              </label>
              <label>
                <span>Diff to</span>
                <select value={cmpTo} onChange={(e) => setCmpTo(e.target.value)}>
                  {list.map((v) => (
                    <option key={v.version} value={v.version}>
                      {v.version}
                    </option>
                  ))}
                </select>
              </label>
              <button type="submit" disabled={cmpFrom === cmpTo}>
                Show diff
              </button>
            </>
          )}
          {info.forkedFrom && (
            <a className="button" href={detailHref(name, { version: selected, from: info.forkedFrom, to: selected })}>
              Diff against {info.forkedFrom}
            </a>
          )}
        </form>
      ) : null}
    </section>
  );
}

function useVersion(name: string, version: string): { doc: Pattern | null; error: string | null } {
  const [doc, setDoc] = useState<Pattern | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    setDoc(null);
    setError(null);
    nexus
      .getPattern({ name, version })
      .then((p) => live && setDoc(p))
      .catch((e) => live && setError(errorText(e)));
    return () => {
      live = false;
    };
  }, [name, version]);
  return { doc, error };
}

function VersionView({ name, version }: { name: string; version: string }) {
  const { doc, error } = useVersion(name, version);
  const [step, setStep] = useState<string | undefined>(undefined);
  const yaml = useMemo(() => (doc ? documentYaml(doc) : ""), [doc]);
  const stepDoc = useMemo(() => {
    const s = doc?.steps.find((x) => x.id === step);
    if (!s || !doc) return "";
    const json = toJson(PatternSchema, { ...doc, steps: [s] }, { useProtoFieldName: true }) as { steps: unknown[] };
    return YAML.stringify(json.steps[0], { lineWidth: 0 });
  }, [doc, step]);
  return (
    <>
      <section className="panel" aria-labelledby="graph-title">
        <h2 id="graph-title">
          Steps of {name}@{version}
        </h2>
        {error && (
          <div role="alert" className="error">
            {error}
          </div>
        )}
        {!doc && !error && <p className="muted">Loading the document…</p>}
        {doc && (
          <>
            <PatternGraphView steps={doc.steps} label={`Steps of ${name} ${version}`} onStepClick={setStep} selected={step} />
            {step && stepDoc && (
              <div className="market-step" data-testid="step-detail">
                <div className="market-step-head">
                  <h3>Step {step}</h3>
                  <button type="button" onClick={() => setStep(undefined)}>
                    Close
                  </button>
                </div>
                <pre tabIndex={0} aria-label={`Step ${step}`}>
                  {stepDoc}
                </pre>
              </div>
            )}
            <p className="muted market-hint">Click a step to see its definition. Solid edges: reads its output; dashed: depends_on.</p>
          </>
        )}
      </section>
      {doc && (
        <section className="panel" aria-labelledby="yaml-title">
          <div className="market-step-head">
            <h2 id="yaml-title">Document</h2>
            <CopyButton text={yaml} label="Copy YAML" />
          </div>
          <pre className="market-yaml" tabIndex={0} aria-label={`YAML of ${name} ${version}`} data-testid="yaml">
            {yaml}
          </pre>
        </section>
      )}
    </>
  );
}

function DiffView({ name, from, to, version }: { name: string; from: string; to: string; version: string }) {
  // `from` is a version of this pattern, or `SOURCE@VERSION` (the pattern it was forked from).
  const src = from.includes("@") ? splitRef(from) : { name, version: from };
  const before = useVersion(src.name, src.version);
  const after = useVersion(name, to);
  const [changes, setChanges] = useState<PatternChange[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [focus, setFocus] = useState<string | undefined>(undefined);

  useEffect(() => {
    let live = true;
    setChanges(null);
    setError(null);
    const req =
      src.name === name
        ? { name, fromVersion: src.version, toVersion: to }
        : { name: src.name, fromVersion: src.version, toName: name, toVersion: to };
    nexus
      .diffPatterns(req)
      .then((r) => live && setChanges(r.changes))
      .catch((e) => live && setError(errorText(e)));
    return () => {
      live = false;
    };
  }, [name, src.name, src.version, to]);

  const highlight = useMemo(() => stepHighlights(changes ?? []), [changes]);
  const steps = useMemo(() => (before.doc && after.doc ? diffSteps(before.doc, after.doc) : []), [before.doc, after.doc]);
  const shown = (changes ?? []).filter((c) => !focus || c.path === `steps.${focus}` || c.path.startsWith(`steps.${focus}.`));
  const tally = { added: 0, removed: 0, changed: 0 };
  for (const c of changes ?? []) {
    const k = changeKindName(c.kind);
    if (k !== "unspecified") tally[k] += 1;
  }
  const fromLabel = src.name === name ? src.version : `${src.name}@${src.version}`;
  const err = error ?? before.error ?? after.error;

  return (
    <section className="panel market-diff" aria-labelledby="diff-title" data-testid="diff">
      <div className="market-step-head">
        <h2 id="diff-title">
          Diff {fromLabel} → {to}
        </h2>
        <a className="button" href={detailHref(name, { version })}>
          Close diff
        </a>
      </div>
      {err && (
        <div role="alert" className="error">
          {err}
        </div>
      )}
      {changes && (
        <p className="muted" role="status">
          {changes.length === 0
            ? "No differences: the two documents do the same thing."
            : `${changes.length} change${changes.length === 1 ? "" : "s"}: ${tally.added} added, ${tally.removed} removed, ${tally.changed} changed.`}
        </p>
      )}
      <ul className="market-legend" aria-label="Legend">
        <li>
          <span className="swatch swatch-added" aria-hidden="true" /> added
        </li>
        <li>
          <span className="swatch swatch-removed" aria-hidden="true" /> removed
        </li>
        <li>
          <span className="swatch swatch-changed" aria-hidden="true" /> changed
        </li>
      </ul>
      {before.doc && after.doc && changes ? (
        <PatternGraphView
          steps={steps}
          highlight={highlight}
          label={`Diff of ${name} from ${fromLabel} to ${to}`}
          onStepClick={(id) => setFocus((f) => (f === id ? undefined : id))}
          selected={focus}
        />
      ) : (
        !err && <p className="muted">Loading both versions…</p>
      )}
      {focus && (
        <p className="market-focus">
          Changes of step <code>{focus}</code>{" "}
          <button type="button" onClick={() => setFocus(undefined)}>
            Show all changes
          </button>
        </p>
      )}
      {changes && changes.length > 0 && (
        <table className="market-changes" data-testid="changes">
          <thead>
            <tr>
              <th scope="col">Change</th>
              <th scope="col">Path</th>
              <th scope="col">Before</th>
              <th scope="col">After</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((c, i) => {
              const kind = changeKindName(c.kind);
              return (
                <tr key={`${c.path}-${i}`} className={`change-${kind}`}>
                  <td>
                    <span className={`badge badge-${kind}`}>{kind}</span>
                  </td>
                  <td>
                    <code>{c.path}</code>
                  </td>
                  <td>
                    <JsonCell text={c.before} />
                  </td>
                  <td>
                    <JsonCell text={c.after} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

function JsonCell({ text }: { text: string }) {
  if (!text) return <span className="muted">—</span>;
  let pretty = text;
  try {
    const v: unknown = JSON.parse(text);
    pretty = typeof v === "object" && v !== null ? YAML.stringify(v, { lineWidth: 0 }).trimEnd() : text;
  } catch {
    // not JSON: shown as is
  }
  return <pre className="market-json">{pretty}</pre>;
}

function CopyButton({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone("Copied.");
    } catch {
      setDone("Copy failed: select the text and copy it.");
    }
    setTimeout(() => setDone(""), 2500);
  };
  return (
    <span className="market-copy">
      <button type="button" onClick={copy}>
        {label}
      </button>
      <span role="status" className="muted">
        {done}
      </span>
    </span>
  );
}

function Share({
  name,
  visibility,
  canAuthor,
  link,
  onChanged,
}: {
  name: string;
  visibility: string;
  canAuthor: boolean;
  link: string;
  onChanged: () => void;
}) {
  const [value, setValue] = useState(visibility);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState("");
  const [copied, setCopied] = useState("");
  useEffect(() => setValue(visibility), [visibility]);

  const save = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await nexus.setVisibility({ name, visibility: value });
      setStatus(`Now ${r.visibility}.`);
      onChanged();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(link);
      setCopied("Link copied.");
    } catch {
      setCopied("Could not copy: select the link above.");
    }
  };
  return (
    <section className="panel market-share" aria-labelledby="share-title">
      <h2 id="share-title">Share</h2>
      {canAuthor ? (
        <form onSubmit={save} className="market-inline-form">
          <label>
            <span>Visibility</span>
            <select value={value} onChange={(e) => setValue(e.target.value)}>
              <option value="private">private — owner and tenant admins</option>
              <option value="tenant">tenant — everyone in the tenant</option>
              <option value="public">public — every tenant</option>
            </select>
          </label>
          <button type="submit" disabled={busy || value === visibility}>
            Save visibility
          </button>
        </form>
      ) : (
        <p>
          Visibility: <strong>{visibility}</strong>
        </p>
      )}
      {error && (
        <div role="alert" className="error">
          {error}
        </div>
      )}
      <p role="status" className="muted">
        {status}
      </p>
      <label className="market-link">
        <span>Link</span>
        <input readOnly value={link} onFocus={(e) => e.target.select()} />
      </label>
      <button type="button" onClick={copy}>
        Copy link
      </button>
      <span role="status" className="muted market-copied">
        {copied}
      </span>
    </section>
  );
}

function Fork({ name, versions, selected }: { name: string; versions: ListPatternVersionsResponse; selected: string }) {
  const [newName, setNewName] = useState("");
  const [version, setVersion] = useState(selected);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setVersion(selected), [selected]);
  const fork = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await nexus.forkPattern({ name, version, newName: newName.trim() });
      navigate(href("marketplace", r.patternRef?.name ?? newName.trim()));
    } catch (err) {
      setError(errorText(err));
      setBusy(false);
    }
  };
  return (
    <section className="panel market-fork" aria-labelledby="fork-title">
      <h2 id="fork-title">Fork</h2>
      <p className="muted">Copy a version under a new name you own (private at first); the lineage is kept.</p>
      <form onSubmit={fork} className="market-stack-form">
        <label>
          <span>New name</span>
          <input value={newName} onChange={(e) => setNewName(e.target.value)} placeholder={`${name}_custom`} required />
        </label>
        <label>
          <span>Version to fork</span>
          <select value={version} onChange={(e) => setVersion(e.target.value)}>
            {versions.versions.map((v) => (
              <option key={v.version} value={v.version}>
                {v.version}
                {v.deprecated ? " (deprecated)" : ""}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" className="primary" disabled={busy || !newName.trim()}>
          Fork
        </button>
      </form>
      {error && (
        <div role="alert" className="error">
          {error}
        </div>
      )}
    </section>
  );
}

interface LineageNode {
  name: string;
  versions: string[];
  /** `SOURCE@VERSION` this name was forked from. */
  from?: string;
  children: LineageNode[];
}

/** The fork tree of a QueryGraph lineage answer, by pattern name. */
function lineageTree(g: QueryGraphResponse): LineageNode[] {
  const byName = new Map<string, LineageNode>();
  const node = (n: string) => {
    let x = byName.get(n);
    if (!x) {
      x = { name: n, versions: [], children: [] };
      byName.set(n, x);
    }
    return x;
  };
  for (const n of g.nodes) {
    if (!n.id.startsWith("pattern:")) continue;
    const r = splitRef(n.id.slice("pattern:".length));
    const x = node(r.name);
    if (r.version && !x.versions.includes(r.version)) x.versions.push(r.version);
  }
  const parent = new Map<string, string>();
  for (const e of g.edges) {
    if (e.kind !== "FORKED_FROM") continue;
    const child = splitRef(e.from.replace(/^pattern:/, ""));
    const src = splitRef(e.to.replace(/^pattern:/, ""));
    if (child.name === src.name || parent.has(child.name)) continue;
    parent.set(child.name, src.name);
    node(child.name).from = `${src.name}@${src.version}`;
    node(src.name).children.push(node(child.name));
  }
  return [...byName.values()].filter((n) => !parent.has(n.name));
}

function Lineage({ name, reload }: { name: string; reload: number }) {
  const [tree, setTree] = useState<LineageNode[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    nexus
      .queryGraph({ query: { case: "lineage", value: name } })
      .then((g) => live && setTree(lineageTree(g)))
      .catch((e) => live && setError(errorText(e)));
    return () => {
      live = false;
    };
  }, [name, reload]);
  const forks = tree ? countNodes(tree) - 1 : 0;
  return (
    <section className="panel market-lineage" aria-labelledby="lineage-title" data-testid="lineage">
      <h2 id="lineage-title">Lineage</h2>
      {error && (
        <div role="alert" className="error">
          {error}
        </div>
      )}
      {!tree && !error && <p className="muted">Loading…</p>}
      {tree && forks <= 0 && <p className="muted">No forks: this pattern is neither a fork nor forked.</p>}
      {tree && forks > 0 && (
        <>
          <ul className="lineage-tree">
            {tree.map((n) => (
              <LineageItem key={n.name} n={n} current={name} />
            ))}
          </ul>
          <a href={`${href("graph")}?lineage=${encodeURIComponent(name)}`}>Open in the graph</a>
        </>
      )}
    </section>
  );
}

function countNodes(ns: LineageNode[]): number {
  return ns.reduce((acc, n) => acc + 1 + countNodes(n.children), 0);
}

function LineageItem({ n, current }: { n: LineageNode; current: string }) {
  return (
    <li>
      <div className={`lineage-node${n.name === current ? " current" : ""}`} data-testid={`lineage-${n.name}`}>
        {n.name === current ? (
          <strong aria-current="page">{n.name}</strong>
        ) : (
          <a href={href("marketplace", n.name)}>{n.name}</a>
        )}
        {n.versions.length > 0 && <span className="muted"> @{n.versions.join(", ")}</span>}
        {n.from && <span className="muted lineage-from"> ← {n.from}</span>}
      </div>
      {n.children.length > 0 && (
        <ul>
          {n.children.map((c) => (
            <LineageItem key={c.name} n={c} current={current} />
          ))}
        </ul>
      )}
    </li>
  );
}

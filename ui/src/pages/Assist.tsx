// AI-assisted patterns: `#/assist` lists the patterns SuggestPatterns proposes from what the tenant
// really runs (filters in the address: `?kind=composite&pattern=NAME`), `#/assist/generate`
// synthesizes candidates from a goal with GeneratePattern. Every proposal can be read (YAML, graph,
// changes against the registered version), opened in the composer as an unregistered draft
// (composer/draft.ts), or registered as is — when the signed-in key may register.
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { useCallback, useEffect, useId, useMemo, useRef, useState, type ClipboardEvent, type FormEvent, type KeyboardEvent } from "react";
import YAML from "yaml";
import { ConnectError, errorText, nexus } from "../api";
import { changeKindName } from "../components/diff";
import { layoutSteps, PatternGraphView, stepSummary } from "../components/PatternGraphView";
import { docOfPattern, draftHref, stashDraft } from "../composer/draft";
import {
  GeneratePatternResponseSchema,
  PatternSort,
  ValidatePatternResponseSchema,
  type Diagnostic,
  type GeneratedCandidate,
  type GeneratePatternResponse,
  type Pattern,
  type PatternChange,
  type Suggestion,
  type SuggestPatternsResponse,
} from "../gen/nexus/v1/nexus_pb";
import { href, navigate, parseRoute, type Route } from "../router";
import { useSession } from "../session";
import {
  bestFirst,
  durationMs,
  EMPTY_FILTERS,
  emptyGenerateForm,
  fieldProblems,
  fieldRow,
  filtersFromQuery,
  filtersToQuery,
  formatScore,
  formProblem,
  gainFigures,
  generateRequest,
  goalFields,
  hasFilters,
  isImprovement,
  kindLabel,
  KINDS,
  kindValue,
  looksLikeFieldList,
  MAX_CANDIDATES,
  parseGoalFields,
  percent,
  splitPatternRef,
  suggestRequest,
  type FieldRow,
  type GenerateForm,
  type SuggestionFilters,
} from "./assistModel";
import "./assist.css";

type Tab = "suggestions" | "generate";
const TABS: { tab: Tab; label: string }[] = [
  { tab: "suggestions", label: "Suggestions" },
  { tab: "generate", label: "Generate" },
];

export default function Assist({ route }: { route: Route }) {
  const tab: Tab = route.rest[0] === "generate" ? "generate" : "suggestions";
  // Both panels stay mounted once shown (a switch keeps the form, the results and the filters).
  const [shown, setShown] = useState<Set<Tab>>(() => new Set([tab]));
  useEffect(() => setShown((s) => (s.has(tab) ? s : new Set([...s, tab]))), [tab]);
  // The suggestions' filters live in the address: back to that tab, back to them.
  const suggestQuery = useRef(tab === "suggestions" ? route.query.toString() : "");
  if (tab === "suggestions") suggestQuery.current = route.query.toString();
  const tabRefs = useRef<Record<Tab, HTMLButtonElement | null>>({ suggestions: null, generate: null });

  const tabHref = (t: Tab) => (t === "generate" ? href("assist", "generate") : `${href("assist")}${suggestQuery.current ? `?${suggestQuery.current}` : ""}`);
  const select = (t: Tab, focus = false) => {
    // Filters typed since the last navigation are in the address (replaced, not navigated).
    if (tab === "suggestions") suggestQuery.current = parseRoute(window.location.hash).query.toString();
    if (t !== tab) navigate(tabHref(t));
    if (focus) tabRefs.current[t]?.focus();
  };
  const onTabKey = (e: KeyboardEvent) => {
    const i = TABS.findIndex((t) => t.tab === tab);
    let next: number | null = null;
    if (e.key === "ArrowRight") next = (i + 1) % TABS.length;
    else if (e.key === "ArrowLeft") next = (i - 1 + TABS.length) % TABS.length;
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = TABS.length - 1;
    if (next === null) return;
    e.preventDefault();
    select(TABS[next].tab, true);
  };

  return (
    <div className="assist">
      <header className="assist-head">
        <h1>AI-assisted patterns</h1>
        <p className="muted">
          Patterns proposed from what your tenant really runs, or synthesized from a goal over the catalog. Every proposal is
          type-checked; nothing is registered until you accept it.
        </p>
      </header>
      <div role="tablist" aria-label="Assist" className="assist-tabs" onKeyDown={onTabKey}>
        {TABS.map((t) => (
          <button
            key={t.tab}
            ref={(el) => {
              tabRefs.current[t.tab] = el;
            }}
            type="button"
            role="tab"
            id={`assist-tab-${t.tab}`}
            aria-selected={t.tab === tab}
            aria-controls={`assist-panel-${t.tab}`}
            tabIndex={t.tab === tab ? 0 : -1}
            onClick={() => select(t.tab)}
          >
            {t.label}
          </button>
        ))}
      </div>
      <section role="tabpanel" id="assist-panel-suggestions" aria-labelledby="assist-tab-suggestions" hidden={tab !== "suggestions"}>
        {shown.has("suggestions") && <Suggestions route={route} active={tab === "suggestions"} />}
      </section>
      <section role="tabpanel" id="assist-panel-generate" aria-labelledby="assist-tab-generate" hidden={tab !== "generate"}>
        {shown.has("generate") && <Generate />}
      </section>
    </div>
  );
}

// ---------------------------------------------------------------------------------------------
// Shared: registering a proposal, opening it in the composer, its YAML, its changes and warnings.

function registerRefusal(roles: string[]): string {
  return `Your key (${roles.join(", ") || "no role"}) may not register patterns: registering needs the author or admin role.`;
}

type RegisterResult =
  | { kind: "ok"; name: string; version: string; created: boolean; warnings: Diagnostic[] }
  | { kind: "error"; message: string; diagnostics: Diagnostic[] };

/** The register button of a proposal (disabled, with the reason, for a key that may not) and the server's answer. */
function RegisterControl({ pattern, label, doneLabel, what }: { pattern: Pattern | undefined; label: string; doneLabel: string; what: string }) {
  const session = useSession();
  const allowed = session.can("author");
  const canRun = session.can("run");
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<RegisterResult | null>(null);
  const ids = useId();

  const register = async () => {
    if (!pattern) return;
    setBusy(true);
    setResult(null);
    try {
      const r = await nexus.registerPattern({ pattern });
      setResult({
        kind: "ok",
        name: r.patternRef?.name ?? pattern.name,
        version: r.patternRef?.version ?? pattern.version,
        created: r.created,
        warnings: r.diagnostics,
      });
    } catch (err) {
      const details = err instanceof ConnectError ? err.findDetails(ValidatePatternResponseSchema) : [];
      setResult({ kind: "error", message: errorText(err), diagnostics: details.flatMap((d) => d.diagnostics) });
    } finally {
      setBusy(false);
    }
  };

  const done = result?.kind === "ok";
  return (
    <>
      <button
        type="button"
        className="primary"
        disabled={!allowed || busy || !pattern || done}
        aria-describedby={allowed ? undefined : `${ids}-why`}
        title={allowed ? `Register ${what} as ${pattern?.name}@${pattern?.version}` : undefined}
        onClick={() => void register()}
      >
        {busy ? "Registering…" : done ? doneLabel : label}
      </button>
      {!allowed && (
        <span className="muted assist-why" id={`${ids}-why`}>
          {registerRefusal(session.principal?.roles ?? [])}
        </span>
      )}
      {result?.kind === "ok" && (
        <div role="status" className="assist-result ok" data-testid="register-result">
          <p>
            {result.created ? "Registered" : "Already registered (identical)"}{" "}
            <code>
              {result.name}@{result.version}
            </code>
            .{" "}
            <a href={`${href("marketplace", result.name)}?version=${encodeURIComponent(result.version)}`}>Open in marketplace</a>
            {canRun && (
              <>
                {" · "}
                <a href={`${href("run", result.name)}?version=${encodeURIComponent(result.version)}`}>Run it</a>
              </>
            )}
          </p>
          {result.warnings.length > 0 && <DiagnosticList diagnostics={result.warnings} label="Warnings" />}
        </div>
      )}
      {result?.kind === "error" && (
        <div role="alert" className="assist-result error" data-testid="register-result">
          <p>{result.message}</p>
          {result.diagnostics.length > 0 && <DiagnosticList diagnostics={result.diagnostics} label="Problems" />}
        </div>
      )}
    </>
  );
}

function DiagnosticList({ diagnostics, label }: { diagnostics: Diagnostic[]; label: string }) {
  return (
    <ul className="assist-diags" aria-label={label}>
      {diagnostics.map((d, i) => (
        <li key={`${d.path}|${i}`}>
          {d.path && <code>{d.path}</code>}
          {d.path && ": "}
          {d.message}
        </li>
      ))}
    </ul>
  );
}

/** Opens `pattern` in the composer as an unregistered draft; the reason it cannot, or null. */
function openInComposer(pattern: Pattern | undefined, origin: string): string | null {
  if (!pattern) return "The proposal carries no document.";
  const key = stashDraft({ doc: docOfPattern(pattern), origin });
  if (!key) return "This tab cannot keep the draft (storage is full or disabled): copy the YAML into the composer instead.";
  navigate(draftHref(key));
  return null;
}

function OpenButton({ pattern, origin, onError }: { pattern: Pattern | undefined; origin: string; onError: (e: string) => void }) {
  return (
    <button
      type="button"
      onClick={() => {
        const why = openInComposer(pattern, origin);
        if (why) onError(why);
      }}
    >
      Open in composer
    </button>
  );
}

function YamlToggle({ open, onToggle, controls }: { open: boolean; onToggle: () => void; controls: string }) {
  return (
    <button type="button" aria-expanded={open} aria-controls={controls} onClick={onToggle}>
      {open ? "Hide YAML" : "Show YAML"}
    </button>
  );
}

function YamlBlock({ id, yaml, label }: { id: string; yaml: string; label: string }) {
  const [copied, setCopied] = useState("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(yaml);
      setCopied("Copied.");
    } catch {
      setCopied("Copy failed: select the text and copy it.");
    }
    setTimeout(() => setCopied(""), 2500);
  };
  return (
    <div className="assist-yaml" id={id}>
      <div className="assist-yaml-head">
        <button type="button" onClick={copy}>
          Copy YAML
        </button>
        <span role="status" className="muted">
          {copied}
        </span>
      </div>
      <pre tabIndex={0} aria-label={label} data-testid="yaml">
        {yaml}
      </pre>
    </div>
  );
}

/** The text of a proposal's YAML (the server's, or printed from the document when it sent none). */
function yamlOf(yaml: string, pattern: Pattern | undefined): string {
  if (yaml) return yaml;
  return pattern ? YAML.stringify(docOfPattern(pattern), { lineWidth: 0 }) : "";
}

function JsonText({ text }: { text: string }) {
  if (!text) return <span className="muted">—</span>;
  let pretty = text;
  try {
    const v: unknown = JSON.parse(text);
    pretty = typeof v === "object" && v !== null ? YAML.stringify(v, { lineWidth: 0 }).trimEnd() : String(v);
  } catch {
    // not JSON: shown as is
  }
  return <pre className="assist-json">{pretty}</pre>;
}

function ChangesTable({ changes, caption }: { changes: PatternChange[]; caption: string }) {
  return (
    <table className="assist-changes" data-testid="changes">
      <caption>{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Change</th>
          <th scope="col">Path</th>
          <th scope="col">Before</th>
          <th scope="col">After</th>
        </tr>
      </thead>
      <tbody>
        {changes.map((c, i) => {
          const kind = changeKindName(c.kind);
          return (
            <tr key={`${c.path}|${i}`} className={`change-${kind}`}>
              <td>
                <span className={`badge badge-${kind}`}>{kind}</span>
              </td>
              <td>
                <code>{c.path}</code>
              </td>
              <td>
                <JsonText text={c.before} />
              </td>
              <td>
                <JsonText text={c.after} />
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function plural(n: number | bigint, one: string, many = `${one}s`): string {
  const k = Number(n);
  return `${k.toLocaleString("en")} ${k === 1 ? one : many}`;
}

/** ` in 9.2 ms` (nothing when the server did not say). */
function took(ms: number | undefined): string {
  if (ms === undefined) return "";
  return ` in ${ms < 10 ? ms.toFixed(1) : Math.round(ms).toLocaleString("en")} ms`;
}

// ---------------------------------------------------------------------------------------------
// Suggestions.

function Suggestions({ route, active }: { route: Route; active: boolean }) {
  const urlKey = active ? filtersToQuery(filtersFromQuery(route.query)) : null;
  const [filters, setFilters] = useState<SuggestionFilters>(() => filtersFromQuery(route.query));
  const [applied, setApplied] = useState<SuggestionFilters>(filters);
  const [reload, setReload] = useState(0);
  const [result, setResult] = useState<SuggestPatternsResponse | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [patternNames, setPatternNames] = useState<string[]>([]);
  const seq = useRef(0);

  // A link or Back/Forward changed the address: it wins over the form.
  useEffect(() => {
    if (urlKey === null) return;
    const f = filtersFromQuery(new URLSearchParams(urlKey));
    setFilters(f);
    setApplied(f);
  }, [urlKey]);

  const apply = useCallback((f: SuggestionFilters) => {
    setFilters(f);
    setApplied(f);
    const q = filtersToQuery(f);
    window.history.replaceState(null, "", q ? `${href("assist")}?${q}` : href("assist"));
  }, []);

  // Typing: asks 300 ms after the last key.
  useEffect(() => {
    if (filtersToQuery(filters) === filtersToQuery(applied)) return;
    const t = setTimeout(() => apply(filters), 300);
    return () => clearTimeout(t);
  }, [filters, applied, apply]);

  const appliedKey = filtersToQuery(applied);
  useEffect(() => {
    const mine = ++seq.current;
    setLoading(true);
    setError(null);
    nexus
      .suggestPatterns({ ...suggestRequest(applied), limit: 100 })
      .then((r) => mine === seq.current && setResult(r))
      .catch((e) => mine === seq.current && setError(errorText(e)))
      .finally(() => mine === seq.current && setLoading(false));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [appliedKey, reload]);

  // Pattern names for the pattern filter's suggestions.
  useEffect(() => {
    let live = true;
    nexus
      .listPatterns({ pageSize: 100, sort: PatternSort.NAME })
      .then((r) => live && setPatternNames(r.patterns.map((p) => p.name)))
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, []);

  const set = (k: keyof SuggestionFilters, v: string) => setFilters((f) => ({ ...f, [k]: v }));
  const filtered = hasFilters(applied);
  const list = result?.suggestions ?? [];
  const kindHelp = KINDS.find((k) => k.value === filters.kind)?.help;

  return (
    <div className="assist-suggestions">
      <form
        className="panel assist-filters"
        role="search"
        aria-label="Filter suggestions"
        onSubmit={(e) => {
          e.preventDefault();
          apply(filters);
        }}
      >
        <label>
          <span>Kind</span>
          <select value={filters.kind} onChange={(e) => apply({ ...filters, kind: e.target.value })} aria-describedby={kindHelp ? "assist-kind-help" : undefined}>
            <option value="">All kinds</option>
            {KINDS.map((k) => (
              <option key={k.value} value={k.value}>
                {k.label}
              </option>
            ))}
          </select>
        </label>
        <label className="grow">
          <span>Pattern</span>
          <input
            type="search"
            value={filters.pattern}
            list="assist-pattern-names"
            placeholder="only suggestions involving this pattern"
            onChange={(e) => set("pattern", e.target.value)}
          />
          <datalist id="assist-pattern-names">
            {patternNames.map((n) => (
              <option key={n} value={n} />
            ))}
          </datalist>
        </label>
        <label className="narrow">
          <span>Min. support</span>
          <input type="number" min={1} step={1} inputMode="numeric" value={filters.minSupport} placeholder="3" onChange={(e) => set("minSupport", e.target.value)} />
        </label>
        <label className="narrow">
          <span>Min. confidence (%)</span>
          <input type="number" min={1} max={100} step={1} inputMode="numeric" value={filters.minConfidence} placeholder="20" onChange={(e) => set("minConfidence", e.target.value)} />
        </label>
        <div className="assist-filter-buttons">
          <button type="button" onClick={() => setReload((n) => n + 1)} title="Mine the executions again">
            Refresh
          </button>
          <button type="button" onClick={() => apply(EMPTY_FILTERS)}>
            Clear filters
          </button>
        </div>
        {kindHelp && (
          <p id="assist-kind-help" className="muted assist-kind-help">
            {kindHelp}
          </p>
        )}
      </form>

      {error && (
        <div role="alert" className="error assist-error">
          {error}
        </div>
      )}
      <p role="status" aria-live="polite" className="muted assist-summary">
        {loading
          ? "Mining the executions…"
          : result
            ? `${plural(list.length, "suggestion")} from ${plural(result.executionsAnalyzed, "execution")} analyzed${took(durationMs(result.took))}.`
            : ""}
      </p>
      {!loading && result && list.length === 0 && !error && (
        <div className="panel assist-empty" data-testid="suggestions-empty">
          {filtered && (
            <p>
              <strong>No suggestion matches these filters.</strong>{" "}
              <button type="button" onClick={() => apply(EMPTY_FILTERS)}>
                Clear the filters
              </button>
            </p>
          )}
          <p>
            {!filtered && <strong>No suggestion yet. </strong>}
            Suggestions come from real executions of your tenant: patterns run one after another with data flowing between them,
            step sequences several patterns share, steps that fail and succeed on retry, reads nothing uses.{" "}
            {result.executionsAnalyzed === 0n
              ? "No execution you can see has run yet: run your patterns (at least 3 times for a pattern to count, by default), then refresh."
              : "Keep running your patterns (a suggestion needs at least 3 executions showing it, by default), then refresh."}
          </p>
          <p className="assist-empty-links">
            <a href={href("marketplace")}>Find a pattern to run</a>
            <a href={href("executions")}>Past executions</a>
            <a href={href("assist", "generate")}>Generate one from a goal instead</a>
          </p>
        </div>
      )}
      {list.length > 0 && (
        <ul className="assist-list" aria-label="Suggestions" aria-busy={loading}>
          {list.map((s) => (
            <SuggestionCard key={s.id} s={s} />
          ))}
        </ul>
      )}
    </div>
  );
}

function SuggestionCard({ s }: { s: Suggestion }) {
  const [showYaml, setShowYaml] = useState(false);
  const [openError, setOpenError] = useState<string | null>(null);
  const ids = useId();
  const p = s.pattern;
  const figures = gainFigures(s.gain);
  const kind = kindValue(s.kind);
  const more = Number(s.support) - s.executionIds.length;
  return (
    <li className="assist-card" data-testid={`suggestion-${s.id}`} aria-labelledby={`${ids}-title`}>
      <div className="assist-card-head">
        <span className={`badge kind-${kind}`}>{kindLabel(s.kind)}</span>
        <h2 id={`${ids}-title`}>{s.title}</h2>
        <span className="assist-stats">
          <span data-testid="support">support {plural(s.support, "execution")}</span>
          <span data-testid="confidence">confidence {percent(s.confidence)}</span>
        </span>
      </div>
      <p className="assist-rationale">{s.rationale}</p>
      <dl className="assist-facts">
        {p && (
          <>
            <dt>{isImprovement(s.kind) ? "Improved version" : "Proposed pattern"}</dt>
            <dd>
              <code>
                {p.name}@{p.version}
              </code>{" "}
              <span className="muted">
                · {plural(p.steps.length, "step")}: {p.steps.map((x) => x.id).join(", ")}
              </span>
            </dd>
          </>
        )}
        {(s.gain?.summary || figures.length > 0) && (
          <>
            <dt>Gain</dt>
            <dd data-testid="gain">
              {s.gain?.summary}
              {figures.length > 0 && <span className="muted"> ({figures.join(", ")})</span>}
            </dd>
          </>
        )}
        {s.basedOn.length > 0 && (
          <>
            <dt>Based on</dt>
            <dd>
              <ul className="assist-inline" aria-label="Based on">
                {s.basedOn.map((ref) => {
                  const r = splitPatternRef(ref);
                  return (
                    <li key={ref}>
                      <a href={`${href("marketplace", r.name)}${r.version ? `?version=${encodeURIComponent(r.version)}` : ""}`}>{ref}</a>
                    </li>
                  );
                })}
              </ul>
            </dd>
          </>
        )}
        {s.executionIds.length > 0 && (
          <>
            <dt>Evidence</dt>
            <dd>
              <ul className="assist-inline assist-evidence" aria-label="Evidence">
                {s.executionIds.map((id) => (
                  <li key={id}>
                    <a href={href("executions", id)} title={`Execution ${id}`}>
                      <code>{id}</code>
                    </a>
                  </li>
                ))}
              </ul>
              {more > 0 && <span className="muted"> and {plural(more, "more execution")}</span>}
            </dd>
          </>
        )}
      </dl>
      {s.changes.length > 0 && <ChangesTable changes={s.changes} caption={`Changes against ${s.basedOn[0] ?? "the registered version"}`} />}
      {s.diagnostics.length > 0 && (
        <div className="warning assist-warnings">
          <DiagnosticList diagnostics={s.diagnostics} label="Warnings" />
        </div>
      )}
      <div className="assist-actions">
        <OpenButton pattern={p} origin={`the suggestion “${s.title}”`} onError={setOpenError} />
        <YamlToggle open={showYaml} onToggle={() => setShowYaml((x) => !x)} controls={`${ids}-yaml`} />
        <RegisterControl pattern={p} label="Accept" doneLabel="Accepted" what="this suggestion" />
      </div>
      {openError && (
        <p role="alert" className="error">
          {openError}
        </p>
      )}
      {showYaml && <YamlBlock id={`${ids}-yaml`} yaml={yamlOf(s.yaml, p)} label={`YAML of ${p?.name ?? s.title}`} />}
    </li>
  );
}

// ---------------------------------------------------------------------------------------------
// Generate.

const SCALARS = ["string", "int64", "int32", "uint64", "uint32", "integer", "number", "double", "float", "boolean", "bool", "bytes"];

interface CatalogNames {
  actions: string[];
  types: string[];
}

function useCatalogNames(): { names: CatalogNames; error: string | null } {
  const [names, setNames] = useState<CatalogNames>({ actions: [], types: [] });
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    nexus
      .listServices({})
      .then((r) => {
        if (!live) return;
        const actions = r.services.flatMap((s) => s.actions.map((a) => a.name)).sort();
        const types = new Set<string>();
        for (const s of r.services) for (const a of s.actions) for (const t of [a.inputType, a.outputType]) if (t) types.add(t.replace(/^\./, ""));
        setNames({ actions, types: [...types].sort() });
      })
      .catch((e) => live && setError(errorText(e)));
    return () => {
      live = false;
    };
  }, []);
  return { names, error };
}

// The form and the last answer are kept for the tab: back from the composer, they are still here.
const FORM_KEY = "nexus.assist.generate.form";
const RESULT_KEY = "nexus.assist.generate.result";

type GenerateResult = { res: GeneratePatternResponse; goal: string };

function savedForm(): GenerateForm {
  try {
    const v = JSON.parse(sessionStorage.getItem(FORM_KEY) ?? "null") as (Omit<GenerateForm, "inputs" | "outputs"> & { inputs: { name: string; type: string }[]; outputs: { name: string; type: string }[] }) | null;
    if (!v || typeof v !== "object") return emptyGenerateForm();
    const rows = (xs: unknown) => (Array.isArray(xs) && xs.length ? xs.map((x: { name?: unknown; type?: unknown }) => fieldRow(String(x?.name ?? ""), String(x?.type ?? ""))) : [fieldRow()]);
    const base = emptyGenerateForm();
    return {
      goal: typeof v.goal === "string" ? v.goal : base.goal,
      inputs: rows(v.inputs),
      outputs: rows(v.outputs),
      useActions: Array.isArray(v.useActions) ? v.useActions.filter((a): a is string => typeof a === "string") : [],
      endWith: typeof v.endWith === "string" ? v.endWith : "",
      name: typeof v.name === "string" ? v.name : "",
      limit: typeof v.limit === "string" ? v.limit : base.limit,
      offline: v.offline === true,
    };
  } catch {
    return emptyGenerateForm();
  }
}

function savedResult(): GenerateResult | null {
  try {
    const v = JSON.parse(sessionStorage.getItem(RESULT_KEY) ?? "null") as { res: JsonValue; goal: string } | null;
    return v ? { res: fromJson(GeneratePatternResponseSchema, v.res), goal: String(v.goal ?? "") } : null;
  } catch {
    return null;
  }
}

function save(key: string, value: unknown): void {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: nothing kept
  }
}

function Generate() {
  const [form, setForm] = useState<GenerateForm>(savedForm);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [result, setResult] = useState<GenerateResult | null>(savedResult);
  const { names, error: catalogError } = useCatalogNames();
  const ids = useId();

  useEffect(() => {
    const t = setTimeout(() => save(FORM_KEY, { ...form, inputs: goalFields(form.inputs), outputs: goalFields(form.outputs) }), 300);
    return () => clearTimeout(t);
  }, [form]);
  useEffect(() => save(RESULT_KEY, result && { res: toJson(GeneratePatternResponseSchema, result.res), goal: result.goal }), [result]);

  const set = <K extends keyof GenerateForm>(k: K, v: GenerateForm[K]) => setForm((f) => ({ ...f, [k]: v }));

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const problem = formProblem(form);
    if (problem) {
      setError(problem);
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const req = generateRequest(form);
      const res = await nexus.generatePattern(req);
      setResult({ res, goal: req.goal || req.name || "the goal" });
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  const candidates = useMemo(() => bestFirst(result?.res.candidates ?? []), [result]);

  return (
    <div className="assist-generate">
      <form className="panel assist-form" aria-label="Goal" aria-describedby={error ? `${ids}-error` : undefined} onSubmit={submit} noValidate>
        <h2>Goal</h2>
        <label className="assist-field">
          <span>What should the pattern do?</span>
          <textarea
            rows={3}
            value={form.goal}
            placeholder="create a user and send them a welcome email"
            onChange={(e) => set("goal", e.target.value)}
            aria-describedby={`${ids}-goal-help`}
          />
        </label>
        <p id={`${ids}-goal-help`} className="muted assist-help">
          In words, and/or with the typed fields and actions below: the more you say, the better the candidates.
        </p>
        <FieldRows
          title="Inputs"
          noun="input"
          help="The pattern's input fields (name and type; paste “email:string, name:string” to fill several). Empty: whatever the steps need becomes an input."
          rows={form.inputs}
          typeRequired
          types={names.types}
          onChange={(rows) => set("inputs", rows)}
        />
        <FieldRows
          title="Outputs"
          noun="output"
          help="Names the pattern's output must have; a type is optional."
          rows={form.outputs}
          typeRequired={false}
          types={names.types}
          onChange={(rows) => set("outputs", rows)}
        />
        <UseActions actions={names.actions} value={form.useActions} onChange={(v) => set("useActions", v)} />
        <label className="assist-field">
          <span>End with</span>
          <input
            value={form.endWith}
            list={`${ids}-actions`}
            placeholder="package.Service/Method (optional)"
            onChange={(e) => set("endWith", e.target.value)}
          />
          <datalist id={`${ids}-actions`}>
            {names.actions.map((a) => (
              <option key={a} value={a} />
            ))}
          </datalist>
        </label>
        <div className="assist-row">
          <label className="assist-field grow">
            <span>Pattern name</span>
            <input value={form.name} placeholder="from the goal" onChange={(e) => set("name", e.target.value)} />
          </label>
          <label className="assist-field narrow">
            <span>Candidates</span>
            <input type="number" min={1} max={MAX_CANDIDATES} step={1} inputMode="numeric" value={form.limit} onChange={(e) => set("limit", e.target.value)} />
          </label>
        </div>
        <label className="assist-check">
          <input type="checkbox" checked={form.offline} onChange={(e) => set("offline", e.target.checked)} />
          <span>Offline synthesis only (do not ask the LLM provider, when one is configured)</span>
        </label>
        {catalogError && <p className="warning assist-help">The catalog could not be listed ({catalogError}): type action names in full.</p>}
        <div className="assist-form-buttons">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Generating…" : "Generate"}
          </button>
          <button
            type="button"
            onClick={() => {
              setForm(emptyGenerateForm());
              setError(null);
              setResult(null);
            }}
          >
            Clear
          </button>
        </div>
        {error && (
          <div role="alert" className="error assist-error" id={`${ids}-error`} data-testid="generate-error">
            {error}
          </div>
        )}
      </form>

      <section className="assist-results" aria-labelledby={`${ids}-cands`} aria-busy={busy}>
        <h2 id={`${ids}-cands`}>Candidates</h2>
        <p role="status" aria-live="polite" className="muted assist-summary">
          {busy
            ? "Synthesizing…"
            : result
              ? `${candidates.length === 0 ? "No candidate" : plural(candidates.length, "candidate")}${took(durationMs(result.res.took))}${candidates.length > 1 ? ", best first" : ""}.`
              : ""}
        </p>
        {!result && !busy && <p className="muted">Describe the goal and press Generate: the candidates appear here, best first, each type-checked against the catalog.</p>}
        {result && result.res.notes.length > 0 && (
          <ul className={`assist-notes${candidates.length === 0 ? " panel" : ""}`} aria-label="Notes" data-testid="notes">
            {result.res.notes.map((n, i) => (
              <li key={i}>{n}</li>
            ))}
          </ul>
        )}
        {candidates.length > 0 && (
          <ol className="assist-list" aria-label="Candidates">
            {candidates.map((c, i) => (
              <CandidateCard key={`${result?.goal}|${i}|${c.pattern?.name}`} c={c} rank={i + 1} goal={result?.goal ?? ""} />
            ))}
          </ol>
        )}
      </section>
    </div>
  );
}

function FieldRows({
  title,
  noun,
  help,
  rows,
  typeRequired,
  types,
  onChange,
}: {
  title: string;
  noun: string;
  help: string;
  rows: FieldRow[];
  typeRequired: boolean;
  types: string[];
  onChange: (rows: FieldRow[]) => void;
}) {
  const ids = useId();
  const problems = useMemo(() => fieldProblems(rows, typeRequired), [rows, typeRequired]);
  const [focusKey, setFocusKey] = useState<number | null>(null);
  const nameRefs = useRef(new Map<number, HTMLInputElement>());
  useEffect(() => {
    if (focusKey === null) return;
    nameRefs.current.get(focusKey)?.focus();
    setFocusKey(null);
  }, [focusKey, rows]);

  const update = (key: number, patch: Partial<FieldRow>) => onChange(rows.map((r) => (r.key === key ? { ...r, ...patch } : r)));
  /** `email:string, name:string` in a name box: one row per field. */
  const split = (key: number, text: string): boolean => {
    if (!looksLikeFieldList(text)) return false;
    const parsed = parseGoalFields(text);
    if (parsed.length === 0) return false;
    const i = rows.findIndex((r) => r.key === key);
    const row = rows[i];
    const made = parsed.map((f, j) => (j === 0 ? { ...row, name: f.name, type: f.type || row.type } : fieldRow(f.name, f.type)));
    onChange([...rows.slice(0, i), ...made, ...rows.slice(i + 1)]);
    return true;
  };
  const onPaste = (key: number, e: ClipboardEvent<HTMLInputElement>) => {
    const text = e.clipboardData.getData("text");
    const current = rows.find((r) => r.key === key);
    if (current && !current.name && split(key, text)) e.preventDefault();
  };
  const add = () => {
    const r = fieldRow();
    onChange([...rows, r]);
    setFocusKey(r.key);
  };
  const remove = (key: number) => {
    const i = rows.findIndex((r) => r.key === key);
    const rest = rows.filter((r) => r.key !== key);
    const next = rest.length ? rest : [fieldRow()];
    onChange(next);
    setFocusKey(next[Math.min(i, next.length - 1)].key);
  };

  return (
    <fieldset className="assist-fieldset" aria-describedby={`${ids}-help`}>
      <legend>{title}</legend>
      <p id={`${ids}-help`} className="muted assist-help">
        {help}
      </p>
      <ul className="assist-rows">
        {rows.map((r, i) => {
          const problem = problems.get(r.key);
          const n = i + 1;
          return (
            <li key={r.key}>
              <div className="assist-field-row">
                <input
                  ref={(el) => {
                    if (el) nameRefs.current.set(r.key, el);
                    else nameRefs.current.delete(r.key);
                  }}
                  aria-label={`${title.slice(0, -1)} ${n} name`}
                  placeholder="name"
                  value={r.name}
                  aria-invalid={problem ? true : undefined}
                  aria-describedby={problem ? `${ids}-p${r.key}` : undefined}
                  onChange={(e) => update(r.key, { name: e.target.value })}
                  onPaste={(e) => onPaste(r.key, e)}
                  onBlur={(e) => split(r.key, e.target.value)}
                />
                <input
                  aria-label={`${title.slice(0, -1)} ${n} type`}
                  placeholder={typeRequired ? "type" : "type (optional)"}
                  list={`${ids}-types`}
                  value={r.type}
                  onChange={(e) => update(r.key, { type: e.target.value })}
                />
                <button type="button" aria-label={`Remove ${noun} ${n}`} title={`Remove ${noun} ${n}`} onClick={() => remove(r.key)} disabled={rows.length === 1 && !r.name && !r.type}>
                  ×
                </button>
              </div>
              {problem && (
                <p className="error assist-help" id={`${ids}-p${r.key}`}>
                  {problem}
                </p>
              )}
            </li>
          );
        })}
      </ul>
      <datalist id={`${ids}-types`}>
        {[...SCALARS, ...types].map((t) => (
          <option key={t} value={t} />
        ))}
      </datalist>
      <button type="button" onClick={add}>
        Add {noun}
      </button>
    </fieldset>
  );
}

function UseActions({ actions, value, onChange }: { actions: string[]; value: string[]; onChange: (v: string[]) => void }) {
  const [pending, setPending] = useState("");
  const ids = useId();
  const add = () => {
    const a = pending.trim();
    if (!a) return;
    if (!value.includes(a)) onChange([...value, a]);
    setPending("");
  };
  return (
    <fieldset className="assist-fieldset">
      <legend>Use actions</legend>
      <p className="muted assist-help" id={`${ids}-help`}>
        Actions the pattern must call.
      </p>
      {value.length > 0 && (
        <ul className="assist-chips" aria-label="Actions to use">
          {value.map((a) => (
            <li key={a}>
              <code>{a}</code>
              <button type="button" aria-label={`Do not require ${a}`} title="Remove" onClick={() => onChange(value.filter((x) => x !== a))}>
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      <div className="assist-field-row">
        <input
          aria-label="Action to use"
          aria-describedby={`${ids}-help`}
          value={pending}
          list={`${ids}-actions`}
          placeholder="package.Service/Method"
          onChange={(e) => setPending(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter") {
              e.preventDefault();
              add();
            }
          }}
        />
        <datalist id={`${ids}-actions`}>
          {actions
            .filter((a) => !value.includes(a))
            .map((a) => (
              <option key={a} value={a} />
            ))}
        </datalist>
        <button type="button" onClick={add} disabled={!pending.trim()}>
          Add action
        </button>
      </div>
    </fieldset>
  );
}

function CandidateCard({ c, rank, goal }: { c: GeneratedCandidate; rank: number; goal: string }) {
  const [showYaml, setShowYaml] = useState(false);
  const [openError, setOpenError] = useState<string | null>(null);
  const ids = useId();
  const p = c.pattern;
  const steps = p?.steps ?? [];
  const label = p ? `${p.name}@${p.version}` : `candidate ${rank}`;
  // Tall enough for the drawing at full size (a long chain scrolls within its box).
  const graphHeight = useMemo(() => {
    const ys = [...layoutSteps(steps).nodes.values()].map((n) => n.y);
    return Math.max(150, Math.min(360, (ys.length ? Math.max(...ys) : 0) + 64 + 56));
  }, [steps]);
  return (
    <li className="assist-card" data-testid={`candidate-${rank}`} aria-labelledby={`${ids}-title`}>
      <div className="assist-card-head">
        <span className="assist-rank" aria-hidden="true">
          #{rank}
        </span>
        <h3 id={`${ids}-title`}>
          <span className="visually-hidden">Candidate {rank}: </span>
          <code>{label}</code>
        </h3>
        <span className={`badge source-${c.source || "unknown"}`}>{c.source || "unknown source"}</span>
        {c.repairRounds > 0 && <span className="badge">{plural(c.repairRounds, "repair round")}</span>}
        <span className="assist-stats" data-testid="score">
          score {formatScore(c.score)}
        </span>
      </div>
      {p?.description && <p className="assist-rationale">{p.description}</p>}
      <ol className="assist-steps" aria-label={`Steps of candidate ${rank}`} data-testid="steps">
        {steps.map((s) => (
          <li key={s.id}>
            <code>{s.id}</code> <span className="muted">{stepSummary(s)}</span>
          </li>
        ))}
      </ol>
      {c.explanation.length > 0 && (
        <ul className="assist-explanation" aria-label={`Why candidate ${rank}`}>
          {c.explanation.map((line, i) => (
            <li key={i}>{line}</li>
          ))}
        </ul>
      )}
      {steps.length > 0 && <PatternGraphView steps={steps} label={`Steps of candidate ${rank}, ${label}`} height={graphHeight} />}
      {c.diagnostics.length > 0 && (
        <div className="warning assist-warnings">
          <DiagnosticList diagnostics={c.diagnostics} label={`Warnings of candidate ${rank}`} />
        </div>
      )}
      {c.changes.length > 0 && (
        <details className="assist-details">
          <summary>
            Changes against the registered {p?.name} ({plural(c.changes.length, "change")})
          </summary>
          <p className="muted assist-help">
            A pattern named {p?.name} is registered: registering this candidate as {p?.version} fails if that version exists. Open it
            in the composer to pick the next version.
          </p>
          <ChangesTable changes={c.changes} caption={`Candidate ${rank} against the registered ${p?.name}`} />
        </details>
      )}
      <div className="assist-actions">
        <OpenButton pattern={p} origin={`candidate #${rank} for “${goal}”`} onError={setOpenError} />
        <YamlToggle open={showYaml} onToggle={() => setShowYaml((x) => !x)} controls={`${ids}-yaml`} />
        <RegisterControl pattern={p} label="Register" doneLabel="Registered" what={`candidate ${rank}`} />
      </div>
      {openError && (
        <p role="alert" className="error">
          {openError}
        </p>
      )}
      {showYaml && <YamlBlock id={`${ids}-yaml`} yaml={yamlOf(c.yaml, p)} label={`YAML of candidate ${rank}`} />}
    </li>
  );
}

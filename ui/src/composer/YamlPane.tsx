// The YAML view, side by side with the canvas and editable: typing re-parses (debounced) and the
// canvas follows; a canvas edit rewrites the text. A parse error is shown with its line and the
// user's text is kept as typed — never replaced while it is theirs and unparsed.
import { memo, useDeferredValue, useEffect, useMemo, useRef, useState } from "react";
import type { PatternDoc } from "../model/types";
import { docToYaml, parseYaml, type Layout, type YamlError } from "../model/yaml";
import type { EditorState } from "./history";

export const YAML_DEBOUNCE_MS = 250;

function same(a: EditorState, b: EditorState): boolean {
  return JSON.stringify([a.doc, a.layout, a.comments]) === JSON.stringify([b.doc, b.layout, b.comments]);
}

export const YamlPane = memo(function YamlPane(props: {
  state: EditorState;
  apply: (label: string, fn: (s: EditorState) => EditorState, coalesce?: string) => void;
  /** Positions for nodes the text adds. */
  fill: (doc: PatternDoc, layout: Layout) => Layout;
}) {
  const { apply, fill } = props;
  // Printing a big document must not hold up the canvas: the text follows a moment later.
  const state = useDeferredValue(props.state);
  const generated = useMemo(() => docToYaml(state.doc, Object.keys(state.layout).length ? { layout: state.layout } : undefined, state.comments), [state]);
  const [text, setText] = useState(generated);
  const [error, setError] = useState<YamlError | null>(null);
  /** The text is the user's and not (yet) what the canvas holds. */
  const [dirty, setDirty] = useState(false);
  const [stale, setStale] = useState(false);
  const applied = useRef<EditorState | null>(null);
  const area = useRef<HTMLTextAreaElement>(null);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);

  useEffect(() => {
    if (applied.current === state) return; // our own edit: keep the text as typed
    applied.current = null; // any other state (an undo back to it included) is printed
    if (dirty) {
      setStale(true); // the canvas changed under unparsed text: offer, never force
      return;
    }
    setText(generated);
    setError(null);
    setStale(false);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [generated]);

  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);

  const parse = (t: string) => {
    const r = parseYaml(t);
    if (!r.ok) {
      setError(r);
      return;
    }
    setError(null);
    setDirty(false);
    setStale(false);
    const current = props.state;
    const next: EditorState = { doc: r.doc, layout: fill(r.doc, r.annotation.layout ?? current.layout), comments: r.comments };
    if (same(next, current)) {
      applied.current = current;
      return;
    }
    applied.current = next;
    apply("Edit YAML", () => next, "yaml");
  };

  const onChange = (t: string) => {
    setText(t);
    setDirty(true);
    if (timer.current) clearTimeout(timer.current);
    timer.current = setTimeout(() => parse(t), YAML_DEBOUNCE_MS);
  };

  const goTo = (line: number) => {
    const el = area.current;
    if (!el) return;
    const lines = text.split("\n");
    const start = lines.slice(0, Math.max(0, line - 1)).reduce((n, l) => n + l.length + 1, 0);
    el.focus();
    el.setSelectionRange(start, start + (lines[line - 1]?.length ?? 0));
  };

  const lineCount = text.split("\n").length;
  return (
    <section className="yaml-pane" aria-label="YAML">
      <div className="pane-head">
        <h2 id="yaml-title">YAML</h2>
        <span className="muted small">{error ? "not applied" : dirty ? "editing…" : "in sync with the canvas"}</span>
        <label className="file-button">
          Open file…
          <input
            type="file"
            accept=".yaml,.yml,.json,application/json,application/yaml,text/yaml,text/plain"
            aria-label="Open a YAML or JSON file"
            onChange={(e) => {
              const file = e.target.files?.[0];
              e.target.value = "";
              if (!file) return;
              void file.text().then((t) => {
                if (timer.current) clearTimeout(timer.current);
                setText(t);
                setDirty(true);
                parse(t);
              });
            }}
          />
        </label>
      </div>
      {error && (
        <div className="yaml-error" role="alert">
          <span>
            Line {error.line || "?"}
            {error.col ? `, column ${error.col}` : ""}: {error.message}
          </span>
          {error.line > 0 && (
            <button type="button" className="link" onClick={() => goTo(error.line)}>
              Go to line {error.line}
            </button>
          )}
        </div>
      )}
      {stale && (
        <div className="yaml-stale" role="status">
          The canvas changed while this text has an error; your text is kept.
          <button
            type="button"
            className="link"
            onClick={() => {
              setText(generated);
              setError(null);
              setDirty(false);
              setStale(false);
            }}
          >
            Replace it with the canvas's YAML
          </button>
        </div>
      )}
      <div className="yaml-edit">
        <pre className="gutter" aria-hidden="true">
          {Array.from({ length: lineCount }, (_, i) => (error && error.line === i + 1 ? `▶${i + 1}` : String(i + 1))).join("\n")}
        </pre>
        <textarea
          ref={area}
          className="code"
          aria-labelledby="yaml-title"
          aria-invalid={error ? true : undefined}
          spellCheck={false}
          wrap="off"
          value={text}
          onChange={(e) => onChange(e.target.value)}
          onScroll={(e) => {
            const g = e.currentTarget.previousElementSibling as HTMLElement | null;
            if (g) g.scrollTop = e.currentTarget.scrollTop;
          }}
          onBlur={() => {
            if (timer.current && dirty) {
              clearTimeout(timer.current);
              parse(text);
            }
          }}
        />
      </div>
    </section>
  );
});

// Form controls of the side panel: every input labelled, its diagnostics under it (role="note",
// aria-invalid + aria-describedby on the input), literal or expression for message fields.
import { useEffect, useId, useRef, useState, type KeyboardEvent, type ReactNode } from "react";
import type { FieldInfo } from "../model/schema";
import type { Json } from "../model/types";
import { isObj } from "../model/types";
import type { Diag } from "./validate";

export function Problems({ id, diags }: { id: string; diags: Diag[] }) {
  if (diags.length === 0) return null;
  return (
    <div id={id} className="field-diags">
      {diags.map((d, i) => (
        <p key={i} className={`field-msg ${d.severity}`} role="note">
          <span aria-hidden="true">{d.severity === "error" ? "● " : "▲ "}</span>
          {d.message}
        </p>
      ))}
    </div>
  );
}

interface ShellProps {
  label: string;
  hint?: string;
  diags?: Diag[];
  children: (ids: { id: string; describedBy?: string; invalid: boolean }) => ReactNode;
  className?: string;
  help?: string;
}

export function Field({ label, hint, diags = [], children, className, help }: ShellProps) {
  const id = useId();
  const errId = `${id}-diag`;
  const helpId = `${id}-help`;
  const invalid = diags.some((d) => d.severity === "error");
  const describedBy = [diags.length ? errId : "", help ? helpId : ""].filter(Boolean).join(" ") || undefined;
  return (
    <div className={`field${invalid ? " invalid" : ""}${className ? ` ${className}` : ""}`}>
      <label htmlFor={id}>
        {label}
        {hint && <span className="hint"> {hint}</span>}
      </label>
      {children({ id, describedBy, invalid })}
      {help && (
        <p id={helpId} className="help muted">
          {help}
        </p>
      )}
      <Problems id={errId} diags={diags} />
    </div>
  );
}

/** A text input bound to a document string (empty → the key is removed). */
export function TextField(props: {
  label: string;
  value: Json | undefined;
  onChange: (v: string | undefined) => void;
  diags?: Diag[];
  hint?: string;
  placeholder?: string;
  mono?: boolean;
  multiline?: boolean;
  help?: string;
  list?: string;
}) {
  const value = props.value === undefined || props.value === null ? "" : typeof props.value === "string" ? props.value : JSON.stringify(props.value);
  return (
    <Field label={props.label} hint={props.hint} diags={props.diags} help={props.help}>
      {({ id, describedBy, invalid }) =>
        props.multiline ? (
          <textarea
            id={id}
            className={props.mono ? "code" : undefined}
            value={value}
            placeholder={props.placeholder}
            aria-invalid={invalid || undefined}
            aria-describedby={describedBy}
            rows={2}
            onChange={(e) => props.onChange(e.target.value === "" ? undefined : e.target.value)}
          />
        ) : (
          <input
            id={id}
            className={props.mono ? "code" : undefined}
            value={value}
            list={props.list}
            placeholder={props.placeholder}
            aria-invalid={invalid || undefined}
            aria-describedby={describedBy}
            onChange={(e) => props.onChange(e.target.value === "" ? undefined : e.target.value)}
          />
        )
      }
    </Field>
  );
}

/** A text input committed on Enter or blur (ids and keys: renaming on every keystroke would be noisy). */
export function CommitField(props: {
  label: string;
  value: string;
  onCommit: (v: string) => void;
  diags?: Diag[];
  hint?: string;
  help?: string;
  inputRef?: (el: HTMLInputElement | null) => void;
}) {
  const [text, setText] = useState(props.value);
  const committed = useRef(props.value);
  useEffect(() => {
    setText(props.value);
    committed.current = props.value;
  }, [props.value]);
  const commit = () => {
    if (text === props.value || text === committed.current) return;
    committed.current = text;
    props.onCommit(text);
  };
  const onKey = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === "Enter") {
      e.preventDefault();
      commit();
    } else if (e.key === "Escape") {
      setText(props.value);
    }
  };
  return (
    <Field label={props.label} hint={props.hint} diags={props.diags} help={props.help}>
      {({ id, describedBy, invalid }) => (
        <input
          id={id}
          ref={props.inputRef}
          value={text}
          aria-invalid={invalid || undefined}
          aria-describedby={describedBy}
          onChange={(e) => setText(e.target.value)}
          onBlur={commit}
          onKeyDown={onKey}
        />
      )}
    </Field>
  );
}

export function NumberField(props: { label: string; value: Json | undefined; onChange: (v: number | undefined) => void; diags?: Diag[]; hint?: string; min?: number; step?: number }) {
  const raw = props.value;
  const [text, setText] = useState(raw === undefined || raw === null ? "" : String(raw));
  useEffect(() => {
    setText((t) => (t !== "" && Number(t) === raw ? t : raw === undefined || raw === null ? "" : String(raw)));
  }, [raw]);
  return (
    <Field label={props.label} hint={props.hint} diags={props.diags}>
      {({ id, describedBy, invalid }) => (
        <input
          id={id}
          type="number"
          value={text}
          min={props.min}
          step={props.step ?? "any"}
          aria-invalid={invalid || undefined}
          aria-describedby={describedBy}
          onChange={(e) => {
            setText(e.target.value);
            if (e.target.value === "") props.onChange(undefined);
            else if (Number.isFinite(Number(e.target.value))) props.onChange(Number(e.target.value));
          }}
        />
      )}
    </Field>
  );
}

export function SelectField(props: {
  label: string;
  value: Json | undefined;
  options: (string | { value: string; label: string })[];
  onChange: (v: string | undefined) => void;
  diags?: Diag[];
  hint?: string;
  empty?: string;
}) {
  const value = props.value === undefined || props.value === null ? "" : String(props.value);
  const opts = props.options.map((o) => (typeof o === "string" ? { value: o, label: o } : o));
  if (value && !opts.some((o) => o.value === value)) opts.push({ value, label: `${value} (not a known value)` });
  return (
    <Field label={props.label} hint={props.hint} diags={props.diags}>
      {({ id, describedBy, invalid }) => (
        <select id={id} value={value} aria-invalid={invalid || undefined} aria-describedby={describedBy} onChange={(e) => props.onChange(e.target.value === "" ? undefined : e.target.value)}>
          <option value="">{props.empty ?? "(default)"}</option>
          {opts.map((o) => (
            <option key={o.value} value={o.value}>
              {o.label}
            </option>
          ))}
        </select>
      )}
    </Field>
  );
}

export function CheckField(props: { label: string; value: Json | undefined; onChange: (v: boolean | undefined) => void; diags?: Diag[]; help?: string }) {
  const id = useId();
  const invalid = (props.diags ?? []).some((d) => d.severity === "error");
  return (
    <div className={`field check${invalid ? " invalid" : ""}`}>
      <input
        id={id}
        type="checkbox"
        checked={props.value === true}
        aria-invalid={invalid || undefined}
        aria-describedby={props.diags?.length ? `${id}-diag` : undefined}
        onChange={(e) => props.onChange(e.target.checked ? true : undefined)}
      />
      <label htmlFor={id}>{props.label}</label>
      {props.help && <span className="help muted"> {props.help}</span>}
      <Problems id={`${id}-diag`} diags={props.diags ?? []} />
    </div>
  );
}

function pretty(v: Json | undefined): string {
  return v === undefined ? "" : JSON.stringify(v, null, 1);
}

/** JSON text for objects and lists: committed when it parses; the text is never thrown away. */
export function JsonField(props: { label: string; value: Json | undefined; onChange: (v: Json | undefined) => void; diags?: Diag[]; hint?: string; help?: string; rows?: number }) {
  const [text, setText] = useState(pretty(props.value));
  const [bad, setBad] = useState<string | null>(null);
  useEffect(() => {
    setText((t) => {
      try {
        if (t.trim() !== "" && JSON.stringify(JSON.parse(t)) === JSON.stringify(props.value)) return t;
      } catch {
        // the user's unfinished text: replaced only by a real change from elsewhere
      }
      return pretty(props.value);
    });
    setBad(null);
  }, [props.value]);
  const local: Diag[] = bad ? [{ path: "", message: bad, severity: "error" }] : [];
  return (
    <Field label={props.label} hint={props.hint ?? "JSON"} diags={[...local, ...(props.diags ?? [])]} help={props.help}>
      {({ id, describedBy, invalid }) => (
        <textarea
          id={id}
          className="code"
          rows={props.rows ?? 3}
          value={text}
          aria-invalid={invalid || undefined}
          aria-describedby={describedBy}
          onChange={(e) => {
            setText(e.target.value);
            if (e.target.value.trim() === "") {
              setBad(null);
              props.onChange(undefined);
              return;
            }
            try {
              const v = JSON.parse(e.target.value) as Json;
              setBad(null);
              props.onChange(v);
            } catch (err) {
              setBad(`not JSON yet: ${err instanceof Error ? err.message : String(err)}`);
            }
          }}
        />
      )}
    </Field>
  );
}

/** One field of a message: a literal of the field's type, or a `${{ }}` expression. */
export function ValueField(props: { field: FieldInfo; value: Json | undefined; onChange: (v: Json | undefined) => void; diags: Diag[] }) {
  const { field, value } = props;
  const isExpr = typeof value === "string" && value.includes("${{");
  const [exprMode, setExprMode] = useState(isExpr);
  useEffect(() => {
    if (isExpr) setExprMode(true);
  }, [isExpr]);
  const description = typeof field.schema.description === "string" ? field.schema.description : undefined;
  const t = field.type;
  const literalKind = field.enumValues
    ? "enum"
    : t === "integer" || t === "number" || t === "int32" || t === "uint32" || t === "double" || t === "float"
      ? "number"
      : t === "boolean"
        ? "bool"
        : t === "list<string>"
          ? "lines"
          : field.repeated || t === "map" || t === "object" || t === "any" || field.message
            ? "json"
            : "text";
  const toggle = (
    <button
      type="button"
      className="mode"
      aria-pressed={exprMode}
      title={exprMode ? "Expression (${{ … }}): click for a literal value" : "Literal value: click to write an expression"}
      aria-label={`${field.path}: expression`}
      onClick={() => {
        if (exprMode) {
          setExprMode(false);
          if (isExpr) props.onChange(undefined);
        } else {
          setExprMode(true);
        }
      }}
    >
      ƒx
    </button>
  );
  const hint = `${t}${description ? "" : ""}`;
  if (exprMode || isExpr) {
    return (
      <div className="value-field">
        <TextField label={field.path} hint={hint} value={value} mono placeholder="${{ steps.x.field }}" help={description} diags={props.diags} onChange={(v) => props.onChange(v)} />
        {toggle}
      </div>
    );
  }
  let control: ReactNode;
  switch (literalKind) {
    case "enum":
      control = <SelectField label={field.path} hint={hint} value={value} options={field.enumValues ?? []} diags={props.diags} empty="(unset)" onChange={(v) => props.onChange(v)} />;
      break;
    case "number":
      control = <NumberField label={field.path} hint={hint} value={value} diags={props.diags} onChange={(v) => props.onChange(v)} />;
      break;
    case "bool":
      control = (
        <SelectField
          label={field.path}
          hint={hint}
          value={value === undefined ? undefined : String(value)}
          options={["true", "false"]}
          diags={props.diags}
          empty="(unset)"
          onChange={(v) => props.onChange(v === undefined ? undefined : v === "true")}
        />
      );
      break;
    case "lines":
      control = (
        <LinesField label={field.path} hint={`${hint}, one per line`} value={value} diags={props.diags} onChange={(v) => props.onChange(v)} />
      );
      break;
    case "json":
      control = <JsonField label={field.path} hint={`${hint} (JSON)`} value={value} diags={props.diags} onChange={(v) => props.onChange(v)} />;
      break;
    default:
      control = <TextField label={field.path} hint={hint} value={value} help={description} diags={props.diags} onChange={(v) => props.onChange(v)} />;
  }
  return (
    <div className="value-field">
      {control}
      {toggle}
    </div>
  );
}

/** A list of strings, one per line. */
export function LinesField(props: { label: string; value: Json | undefined; onChange: (v: Json | undefined) => void; diags?: Diag[]; hint?: string }) {
  const list = Array.isArray(props.value) ? props.value : [];
  const joined = list.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join("\n");
  const [text, setText] = useState(joined);
  useEffect(() => setText((t) => (t.split("\n").filter((x) => x !== "").join("\n") === joined ? t : joined)), [joined]);
  if (props.value !== undefined && !Array.isArray(props.value)) {
    return <JsonField label={props.label} hint={props.hint} value={props.value} diags={props.diags} onChange={props.onChange} />;
  }
  return (
    <Field label={props.label} hint={props.hint} diags={props.diags}>
      {({ id, describedBy, invalid }) => (
        <textarea
          id={id}
          rows={2}
          value={text}
          aria-invalid={invalid || undefined}
          aria-describedby={describedBy}
          onChange={(e) => {
            setText(e.target.value);
            const items = e.target.value.split("\n").filter((x) => x !== "");
            props.onChange(items.length ? items : undefined);
          }}
        />
      )}
    </Field>
  );
}

/** Whether a value is an object (for nested message forms). */
export function objOr(v: Json | undefined): Record<string, Json> {
  return isObj(v) ? v : {};
}

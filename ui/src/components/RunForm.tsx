// A form generated from a pattern's input JSON Schema (string, number, integer, boolean, enum,
// object, array; required marks, defaults, descriptions), with a raw JSON editor as fallback and
// a message on each wrong field. The raw JSON is sent as typed: the server checks it against the
// schema and its refusal is shown by the page.
import type { JsonObject } from "@bufbuild/protobuf";
import { useId, useMemo, useState, type FormEvent, type ReactNode } from "react";
import {
  childPath,
  draftFrom,
  formable,
  inputOf,
  parseInputJson,
  properties,
  requiredOf,
  typeLabel,
  type Draft,
  type Errors,
} from "./runFormModel";

export interface RunFormProps {
  /** The pattern's `input` (a JSON Schema); none = any object. */
  schema: JsonObject | undefined;
  /** The input to start from (e.g. the last one run); defaults come from the schema otherwise. */
  initial?: JsonObject;
  /** When set, the submit button is disabled and this says why. */
  disabledReason?: string;
  busy?: boolean;
  submitLabel?: string;
  onSubmit(input: JsonObject): void;
  /** Every change of the input that is valid JSON (to remember a draft). */
  onInputChange?(input: JsonObject): void;
  /** Extra controls shown above the submit button (e.g. an idempotency key). */
  children?: ReactNode;
}

const safeId = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, "_");

interface FieldProps {
  schema: JsonObject;
  draft: Draft;
  path: string;
  name: string;
  required: boolean;
  errors: Errors;
  idBase: string;
  onChange(d: Draft): void;
}

function Help({ schema, id }: { schema: JsonObject; id: string }) {
  const desc = typeof schema.description === "string" ? schema.description : "";
  const type = typeLabel(schema);
  return (
    <p className="rf-help" id={id}>
      <span className="rf-type">{type}</span>
      {desc && <> — {desc}</>}
    </p>
  );
}

function Label({ htmlFor, name, schema, required }: { htmlFor?: string; name: string; schema: JsonObject; required: boolean }) {
  const title = typeof schema.title === "string" ? schema.title : name;
  return (
    <label htmlFor={htmlFor} className="rf-label">
      {title}
      {required && (
        <>
          <span className="rf-req" aria-hidden="true">
            {" "}
            *
          </span>
          <span className="sr-only"> (required)</span>
        </>
      )}
    </label>
  );
}

function Field(props: FieldProps) {
  const { schema, draft, path, name, required, errors, idBase, onChange } = props;
  const id = `${idBase}-${safeId(path) || "root"}`;
  const helpId = `${id}-help`;
  const errId = `${id}-err`;
  const error = errors.get(path);
  const described = error ? `${helpId} ${errId}` : helpId;
  const common = {
    id,
    "aria-describedby": described,
    "aria-invalid": error ? true : undefined,
    "aria-required": required || undefined,
  } as const;
  const err = error && (
    <p className="rf-error" id={errId}>
      {error}
    </p>
  );

  switch (draft.kind) {
    case "string": {
      const fmt = schema.format;
      const type = fmt === "email" ? "email" : fmt === "uri" ? "url" : fmt === "date" ? "date" : "text";
      const long = typeof schema.maxLength === "number" && schema.maxLength > 200;
      const examples = Array.isArray(schema.examples) ? schema.examples : [];
      const placeholder = examples.length ? String(examples[0]) : undefined;
      return (
        <div className="rf-field">
          <Label htmlFor={id} name={name} schema={schema} required={required} />
          {long ? (
            <textarea {...common} rows={3} value={draft.text} placeholder={placeholder} onChange={(e) => onChange({ kind: "string", text: e.target.value })} />
          ) : (
            <input {...common} type={type} value={draft.text} placeholder={placeholder} onChange={(e) => onChange({ kind: "string", text: e.target.value })} />
          )}
          <Help schema={schema} id={helpId} />
          {err}
        </div>
      );
    }
    case "number":
      return (
        <div className="rf-field">
          <Label htmlFor={id} name={name} schema={schema} required={required} />
          <input
            {...common}
            type="text"
            inputMode={schema.type === "integer" ? "numeric" : "decimal"}
            value={draft.text}
            onChange={(e) => onChange({ kind: "number", text: e.target.value })}
          />
          <Help schema={schema} id={helpId} />
          {err}
        </div>
      );
    case "enum": {
      const options = schema.enum as unknown[];
      return (
        <div className="rf-field">
          <Label htmlFor={id} name={name} schema={schema} required={required} />
          <select {...common} value={draft.choice} onChange={(e) => onChange({ kind: "enum", choice: e.target.value })}>
            <option value="">{required ? "Choose…" : "(not set)"}</option>
            {options.map((o, i) => (
              <option key={i} value={String(i)}>
                {typeof o === "string" ? o : JSON.stringify(o)}
              </option>
            ))}
          </select>
          <Help schema={schema} id={helpId} />
          {err}
        </div>
      );
    }
    case "boolean":
      if (required) {
        return (
          <div className="rf-field rf-check">
            <input {...common} type="checkbox" checked={draft.value ?? false} onChange={(e) => onChange({ kind: "boolean", value: e.target.checked })} />
            <Label htmlFor={id} name={name} schema={schema} required={required} />
            <Help schema={schema} id={helpId} />
            {err}
          </div>
        );
      }
      return (
        <div className="rf-field">
          <Label htmlFor={id} name={name} schema={schema} required={required} />
          <select
            {...common}
            value={draft.value === null ? "" : String(draft.value)}
            onChange={(e) => onChange({ kind: "boolean", value: e.target.value === "" ? null : e.target.value === "true" })}
          >
            <option value="">(not set)</option>
            <option value="true">true</option>
            <option value="false">false</option>
          </select>
          <Help schema={schema} id={helpId} />
          {err}
        </div>
      );
    case "json":
      return (
        <div className="rf-field">
          <Label htmlFor={id} name={name} schema={schema} required={required} />
          <textarea
            {...common}
            className="code"
            rows={4}
            spellCheck={false}
            value={draft.text}
            placeholder={schema.type === "array" ? "[ ]" : schema.type === "object" ? "{ }" : "JSON"}
            onChange={(e) => onChange({ kind: "json", text: e.target.value })}
          />
          <Help schema={schema} id={helpId} />
          {err}
        </div>
      );
    case "object":
      return (
        <fieldset className="rf-group" aria-describedby={described}>
          <legend>
            {typeof schema.title === "string" ? schema.title : name}
            {required && <span className="rf-req"> *</span>}
          </legend>
          <Help schema={schema} id={helpId} />
          {err}
          <ObjectFields {...props} draft={draft} />
        </fieldset>
      );
    case "array": {
      const items = schema.items as JsonObject;
      const label = typeof schema.title === "string" ? schema.title : name;
      return (
        <fieldset className="rf-group" aria-describedby={described}>
          <legend>
            {label}
            {required && <span className="rf-req"> *</span>}
          </legend>
          <Help schema={schema} id={helpId} />
          {err}
          {draft.items.length === 0 && <p className="muted rf-empty">No items.</p>}
          <ol className="rf-items">
            {draft.items.map((item, i) => (
              <li key={i} className="rf-item">
                <Field
                  schema={items}
                  draft={item}
                  path={childPath(path, i)}
                  name={`${label} item ${i + 1}`}
                  required
                  errors={errors}
                  idBase={idBase}
                  onChange={(d) => onChange({ kind: "array", items: draft.items.map((x, j) => (j === i ? d : x)) })}
                />
                <button
                  type="button"
                  className="rf-remove"
                  aria-label={`Remove ${label} item ${i + 1}`}
                  onClick={() => onChange({ kind: "array", items: draft.items.filter((_, j) => j !== i) })}
                >
                  Remove
                </button>
              </li>
            ))}
          </ol>
          <button type="button" onClick={() => onChange({ kind: "array", items: [...draft.items, draftFrom(items, undefined)] })}>
            Add {label} item
          </button>
        </fieldset>
      );
    }
  }
}

function ObjectFields({ schema, draft, path, errors, idBase, onChange }: FieldProps & { draft: Extract<Draft, { kind: "object" }> }) {
  const req = requiredOf(schema);
  return (
    <div className="rf-fields">
      {properties(schema).map(([k, s]) => (
        <Field
          key={k}
          schema={s}
          draft={draft.fields[k] ?? draftFrom(s, undefined)}
          path={childPath(path, k)}
          name={k}
          required={req.has(k)}
          errors={errors}
          idBase={idBase}
          onChange={(d) => onChange({ ...draft, fields: { ...draft.fields, [k]: d } })}
        />
      ))}
      {Object.keys(draft.extra).length > 0 && (
        <p className="muted">Also sent, not in the schema: {Object.keys(draft.extra).join(", ")}.</p>
      )}
    </div>
  );
}

export function RunForm({ schema, initial, disabledReason, busy, submitLabel = "Run", onSubmit, onInputChange, children }: RunFormProps) {
  const idBase = useId().replace(/:/g, "");
  const canForm = formable(schema);
  const [mode, setMode] = useState<"form" | "json">(canForm ? "form" : "json");
  const [draft, setDraft] = useState<Draft>(() => (canForm ? draftFrom(schema, initial) : { kind: "json", text: "" }));
  const [jsonText, setJsonText] = useState(() => JSON.stringify(initial ?? (canForm ? inputOf(schema, draftFrom(schema, undefined)).input : {}), null, 2));
  const [tried, setTried] = useState(false);
  const [jsonError, setJsonError] = useState<string | null>(null);

  const checked = useMemo(() => (canForm ? inputOf(schema, draft) : null), [canForm, schema, draft]);
  const errors: Errors = tried && checked ? checked.errors : new Map();

  const changeDraft = (d: Draft) => {
    setDraft(d);
    if (canForm && onInputChange) onInputChange(inputOf(schema, d).input);
  };

  const switchTo = (m: "form" | "json") => {
    if (m === mode) return;
    if (m === "json") {
      if (checked) setJsonText(JSON.stringify(checked.input, null, 2));
      setJsonError(null);
      setMode("json");
      return;
    }
    const parsed = parseInputJson(jsonText);
    if (parsed.error || !parsed.input) {
      setJsonError(`${parsed.error} Fix it to go back to the form.`);
      return;
    }
    if (canForm) setDraft(draftFrom(schema, parsed.input));
    setJsonError(null);
    setMode("form");
  };

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (disabledReason || busy) return;
    if (mode === "json") {
      const parsed = parseInputJson(jsonText);
      if (parsed.error || !parsed.input) {
        setJsonError(parsed.error ?? "The input must be a JSON object.");
        return;
      }
      setJsonError(null);
      onSubmit(parsed.input);
      return;
    }
    setTried(true);
    if (!checked) return;
    if (checked.errors.size > 0) {
      // Focus the first wrong field.
      const first = [...checked.errors.keys()][0];
      requestAnimationFrame(() => document.getElementById(`${idBase}-${safeId(first)}`)?.focus());
      return;
    }
    onSubmit(checked.input);
  };

  const reasonId = `${idBase}-reason`;
  const count = errors.size;
  return (
    <form className="run-form" onSubmit={submit} noValidate aria-label="Execution input">
      <fieldset className="rf-mode">
        <legend className="sr-only">Edit the input as</legend>
        <label>
          <input type="radio" name={`${idBase}-mode`} checked={mode === "form"} disabled={!canForm} onChange={() => switchTo("form")} /> Form
        </label>
        <label>
          <input type="radio" name={`${idBase}-mode`} checked={mode === "json"} onChange={() => switchTo("json")} /> JSON
        </label>
        {!canForm && (
          <span className="muted">
            {schema ? "The input schema declares no properties" : "This pattern declares no input schema"}: the input is edited as JSON.
          </span>
        )}
      </fieldset>

      {mode === "form" && canForm ? (
        <ObjectFields
          schema={schema}
          draft={draft as Extract<Draft, { kind: "object" }>}
          path=""
          name="input"
          required
          errors={errors}
          idBase={idBase}
          onChange={changeDraft}
        />
      ) : (
        <div className="rf-field">
          <label htmlFor={`${idBase}-json`} className="rf-label">
            Input (JSON)
          </label>
          <textarea
            id={`${idBase}-json`}
            className="code rf-json"
            rows={Math.min(24, Math.max(6, jsonText.split("\n").length + 1))}
            spellCheck={false}
            value={jsonText}
            aria-invalid={jsonError ? true : undefined}
            aria-describedby={`${idBase}-json-help${jsonError ? ` ${idBase}-json-err` : ""}`}
            onChange={(e) => {
              setJsonText(e.target.value);
              const p = parseInputJson(e.target.value);
              if (p.input && onInputChange) onInputChange(p.input);
            }}
          />
          <p className="rf-help" id={`${idBase}-json-help`}>
            Sent as typed; the server checks it against the pattern's input schema.
          </p>
          {jsonError && (
            <p className="rf-error" id={`${idBase}-json-err`} role="alert">
              {jsonError}
            </p>
          )}
        </div>
      )}

      {children}

      {count > 0 && (
        <p className="rf-error rf-summary" role="alert">
          {count === 1 ? "1 field needs attention" : `${count} fields need attention`}: {[...errors.keys()].map((p) => p || "input").join(", ")}.
        </p>
      )}
      <div className="rf-actions">
        <button type="submit" className="primary" disabled={!!disabledReason || busy} aria-describedby={disabledReason ? reasonId : undefined}>
          {busy ? "Starting…" : submitLabel}
        </button>
        {disabledReason && (
          <span className="muted" id={reasonId}>
            {disabledReason}
          </span>
        )}
      </div>
    </form>
  );
}

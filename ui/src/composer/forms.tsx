// The side panel: the form of the selected step (generated from its action's input message, plus
// when, for_each, concurrency, retry, timeout, compensate, stream, depends_on, emit, wait_for), the
// form of the pattern itself, and the selected connection. Every change is one undoable edit.
import { useId, type ReactNode } from "react";
import { stepsOf, type GraphEdge } from "../model/graph";
import { getIn, setPatternField, setStepField, withKey } from "../model/ops";
import type { FieldInfo } from "../model/schema";
import type { Json, JsonObj, PatternDoc } from "../model/types";
import { isObj, STEP_KEYS } from "../model/types";
import type { ActionInfo, Catalog } from "./catalog";
import { layoutKey } from "./derive";
import { CheckField, CommitField, JsonField, LinesField, NumberField, Problems, SelectField, TextField, ValueField } from "./fields";
import { locate, type Diag } from "./validate";


export type Edit = (label: string, fn: (d: PatternDoc) => PatternDoc, coalesce?: string) => void;

function Section({ title, open, children }: { title: string; open?: boolean; children: ReactNode }) {
  return (
    <details className="section" open={open}>
      <summary>{title}</summary>
      <div className="section-body">{children}</div>
    </details>
  );
}

/** Renames an object key in place (order kept). */
function renameKey(o: JsonObj, from: string, to: string): JsonObj {
  const out: JsonObj = {};
  for (const [k, v] of Object.entries(o)) out[k === from ? to : k] = v;
  return out;
}

// ---------------------------------------------------------------------------------------------
// A message form (`with` of an action, `with` of a compensation).

function MessageForm(props: {
  fields: FieldInfo[];
  value: Json | undefined;
  base: string;
  set: (path: string, v: Json | undefined) => void;
  diagsAt: (field: string) => Diag[];
}) {
  const { fields, value, base, set, diagsAt } = props;
  const top = fields.filter((f) => f.depth === 0);
  const render = (f: FieldInfo): ReactNode => {
    const v = getIn(value, f.path.split("."));
    const fieldPath = `${base}.${f.path}`;
    if (f.message && !(typeof v === "string")) {
      const children = fields.filter((c) => c.depth === f.depth + 1 && c.path.startsWith(`${f.path}.`));
      if (children.length > 0) {
        return (
          <fieldset key={f.path} className="message">
            <legend>
              {f.path} <span className="hint">{f.type}</span>
            </legend>
            <Problems id={`${fieldPath}-diags`} diags={diagsAt(fieldPath)} />
            {children.map(render)}
            <button type="button" className="link" onClick={() => set(f.path, "${{  }}")}>
              Set all of {f.path} from an expression
            </button>
          </fieldset>
        );
      }
    }
    const below = diagsAt(fieldPath);
    return <ValueField key={f.path} field={f} value={v} diags={below} onChange={(x) => set(f.path, x)} />;
  };
  return <>{top.map(render)}</>;
}

// ---------------------------------------------------------------------------------------------
// The step form.

export interface StepFormProps {
  doc: PatternDoc;
  index: number;
  catalog: Catalog | null;
  diags: Diag[];
  edit: Edit;
  onDelete: () => void;
  /** Renames the step (references and its position follow): one edit. */
  onRename: (newId: string) => void;
  idInputRef?: (el: HTMLInputElement | null) => void;
}

export function StepForm({ doc, index, catalog, diags, edit, onDelete, onRename, idInputRef }: StepFormProps) {
  const listId = useId();
  const steps = stepsOf(doc);
  const step: JsonObj = isObj(steps[index]) ? (steps[index] as JsonObj) : {};
  const stepId = typeof step.id === "string" ? step.id : "";
  const name = stepId || `#${index + 1}`;
  const kind = isObj(step.emit) ? "emit" : isObj(step.wait_for) ? "wait" : "call";
  const call = typeof step.call === "string" ? step.call : "";
  const action: ActionInfo | undefined = catalog?.byName.get(call);
  const fieldOf = (d: Diag) => locate(d.path).field ?? "";
  const diagsAt = (field: string) => diags.filter((d) => fieldOf(d) === field);
  const diagsUnder = (field: string) => diags.filter((d) => fieldOf(d) === field || fieldOf(d).startsWith(`${field}.`) || fieldOf(d).startsWith(`${field}[`));
  const set = (path: string, v: Json | undefined, label?: string) =>
    edit(label ?? `Set ${name}.${path}`, (d) => setStepField(d, index, path, v), `step:${index}:${path}`);
  const otherIds = steps.map((s) => (isObj(s) && typeof s.id === "string" ? s.id : "")).filter((s, i) => s && i !== index);
  const deps = Array.isArray(step.depends_on) ? step.depends_on.filter((x): x is string => typeof x === "string") : [];
  const retry = isObj(step.retry) ? step.retry : undefined;
  const comp = isObj(step.compensate) ? step.compensate : undefined;
  const compAction = typeof comp?.call === "string" ? catalog?.byName.get(comp.call) : undefined;
  const emit = isObj(step.emit) ? step.emit : undefined;
  const wait = isObj(step.wait_for) ? step.wait_for : undefined;
  const knownInput = new Set(action?.inputFields.filter((f) => f.depth === 0).map((f) => f.name));
  const extraWith = isObj(step.with) ? Object.keys(step.with).filter((k) => !knownInput.has(k)) : [];
  const stepLevel = diags.filter((d) => {
    const f = fieldOf(d);
    return f === "" || !/^(id|call|with|when|for_each|concurrency|retry|timeout|compensate|stream|emit|wait_for|depends_on)\b/.test(f);
  });

  const setKind = (k: string | undefined) => {
    if (!k || k === kind) return;
    edit(`Make ${name} ${k === "call" ? "call an action" : k === "emit" ? "emit an event" : "wait for an event"}`, (d) => {
      let s = step;
      for (const key of ["call", "with", "stream", "emit", "wait_for"]) s = withKey(s, key, undefined);
      if (k === "emit") s = withKey(s, "emit", { type: "" }, STEP_KEYS);
      if (k === "wait") s = withKey(s, "wait_for", { event: "" }, STEP_KEYS);
      if (k === "call") s = withKey(s, "call", "", STEP_KEYS);
      const next = [...stepsOf(d)];
      next[index] = s;
      return withKey(d, "steps", next);
    });
  };

  return (
    <form className="inspector-form" aria-label={`Step ${name}`} onSubmit={(e) => e.preventDefault()}>
      <div className="form-head">
        <h2>
          Step <code>{name}</code>
        </h2>
        <button type="button" className="danger" onClick={onDelete}>
          Delete step
        </button>
      </div>
      <Problems id={`step-${index}-diags`} diags={stepLevel} />
      <CommitField
        label="Step id"
        value={stepId}
        inputRef={idInputRef}
        diags={diagsAt("id")}
        help="Other steps read this step's output as steps.<id>; renaming updates them."
        onCommit={(v) => onRename(v.trim())}
      />
      <SelectField
        label="Kind"
        value={kind}
        options={[
          { value: "call", label: "call an action" },
          { value: "emit", label: "emit an event" },
          { value: "wait", label: "wait for an event" },
        ]}
        empty="(choose)"
        onChange={setKind}
      />
      {kind === "call" && (
        <>
          <TextField label="Action" hint="package.Service/Method" value={step.call} list={listId} mono diags={diagsAt("call")} onChange={(v) => set("call", v ?? "", `Set ${name}.call`)} />
          <datalist id={listId}>
            {catalog?.actions.map((a) => (
              <option key={a.name} value={a.name} />
            ))}
          </datalist>
          {action?.description && <p className="muted small">{action.description}</p>}
          {call && !action && catalog && <p className="field-msg warning">This action is not in the catalog.</p>}
          <fieldset className="message top">
            <legend>
              Request <span className="hint">{action?.inputType ?? "with"}</span>
            </legend>
            <Problems id={`step-${index}-with`} diags={diagsAt("with")} />
            {action ? (
              <MessageForm fields={action.inputFields} value={step.with} base="with" set={(p, v) => set(`with.${p}`, v)} diagsAt={diagsAt} />
            ) : (
              <JsonField label="with" value={step.with} diags={diagsUnder("with").filter((d) => fieldOf(d) !== "with")} onChange={(v) => set("with", v)} rows={5} />
            )}
            {action &&
              extraWith.map((k) => (
                <JsonField
                  key={k}
                  label={`${k} (not a field of ${action.inputType})`}
                  value={isObj(step.with) ? step.with[k] : undefined}
                  diags={diagsUnder(`with.${k}`)}
                  onChange={(v) => set(`with.${k}`, v)}
                />
              ))}
          </fieldset>
          {(action?.serverStreaming || step.stream !== undefined) && (
            <CheckField
              label="stream"
              value={step.stream}
              diags={diagsAt("stream")}
              help="forward each message of this server-streaming action to the caller"
              onChange={(v) => set("stream", v)}
            />
          )}
        </>
      )}
      {kind === "emit" && emit && (
        <fieldset className="message top">
          <legend>Emit an event</legend>
          <Problems id={`step-${index}-emit`} diags={diagsAt("emit")} />
          <TextField label="type" value={emit.type} diags={diagsAt("emit.type")} onChange={(v) => set("emit.type", v ?? "")} />
          <TextField label="subject" hint="${{ }} allowed" mono value={emit.subject} diags={diagsAt("emit.subject")} onChange={(v) => set("emit.subject", v)} />
          <JsonField label="data" value={emit.data} diags={diagsUnder("emit.data")} rows={4} onChange={(v) => set("emit.data", v)} />
        </fieldset>
      )}
      {kind === "wait" && wait && (
        <fieldset className="message top">
          <legend>Wait for an event</legend>
          <Problems id={`step-${index}-wait`} diags={diagsAt("wait_for")} />
          {!Array.isArray(wait.any) && (
            <>
              <TextField label="event" value={wait.event} diags={diagsAt("wait_for.event")} onChange={(v) => set("wait_for.event", v ?? "")} />
              <TextField label="match" hint="CEL over event, input, steps" mono value={wait.match} diags={diagsAt("wait_for.match")} onChange={(v) => set("wait_for.match", v)} />
            </>
          )}
          <TextField label="timeout" hint="e.g. 3600s" value={wait.timeout} diags={diagsAt("wait_for.timeout")} onChange={(v) => set("wait_for.timeout", v)} />
          {Array.isArray(wait.any) ? (
            <>
              {wait.any.map((b, k) => (
                <fieldset key={k} className="message">
                  <legend>any[{k}]</legend>
                  <TextField label={`any[${k}] event`} value={isObj(b) ? b.event : undefined} diags={diagsAt(`wait_for.any[${k}].event`)} onChange={(v) => set(`wait_for.any[${k}].event`, v ?? "")} />
                  <TextField label={`any[${k}] match`} mono value={isObj(b) ? b.match : undefined} diags={diagsAt(`wait_for.any[${k}].match`)} onChange={(v) => set(`wait_for.any[${k}].match`, v)} />
                  <button type="button" onClick={() => set(`wait_for.any[${k}]`, undefined, `Remove ${name}.wait_for.any[${k}]`)}>
                    Remove branch {k}
                  </button>
                </fieldset>
              ))}
              <button type="button" onClick={() => set(`wait_for.any[${(wait.any as Json[]).length}]`, { event: "" }, `Add a branch to ${name}.wait_for.any`)}>
                Add a branch
              </button>
            </>
          ) : (
            <button
              type="button"
              onClick={() =>
                edit(`Make ${name} wait for any of several events`, (d) =>
                  setStepField(d, index, "wait_for", { ...(wait.timeout !== undefined ? { timeout: wait.timeout } : {}), any: [{ event: typeof wait.event === "string" ? wait.event : "", ...(wait.match !== undefined ? { match: wait.match } : {}) }] }),
                )
              }
            >
              Wait for any of several events
            </button>
          )}
        </fieldset>
      )}
      <Section title="Flow: when, for_each, depends_on" open={["when", "for_each", "concurrency", "depends_on"].some((k) => step[k] !== undefined || diagsUnder(k).length > 0)}>
        <TextField label="when" hint="condition; false skips the step" mono placeholder="${{ has(input.x) }}" value={step.when} diags={diagsAt("when")} onChange={(v) => set("when", v)} />
        <TextField label="for_each" hint="list; runs once per item" mono placeholder="${{ input.items }}" value={step.for_each} diags={diagsAt("for_each")} onChange={(v) => set("for_each", v)} />
        <NumberField label="concurrency" hint="for_each cap (0 = default)" min={0} step={1} value={step.concurrency} diags={diagsAt("concurrency")} onChange={(v) => set("concurrency", v)} />
        <fieldset className="deps">
          <legend>depends_on</legend>
          {otherIds.length === 0 && <p className="muted small">No other steps.</p>}
          {otherIds.map((o) => (
            <CheckField
              key={o}
              label={o}
              value={deps.includes(o)}
              onChange={(on) => {
                const next = on ? [...deps, o] : deps.filter((x) => x !== o);
                set("depends_on", next.length ? next : undefined, `${on ? "Add" : "Remove"} ${name} depends_on ${o}`);
              }}
            />
          ))}
          <Problems id={`step-${index}-deps`} diags={diagsUnder("depends_on")} />
        </fieldset>
      </Section>
      <Section title="Reliability: retry, timeout, compensate" open={["retry", "timeout", "compensate"].some((k) => step[k] !== undefined || diagsUnder(k).length > 0)}>
        <TextField label="timeout" hint="per attempt, e.g. 2s" value={step.timeout} diags={diagsAt("timeout")} onChange={(v) => set("timeout", v)} />
        <fieldset className="message">
          <legend>retry</legend>
          <Problems id={`step-${index}-retry`} diags={diagsAt("retry")} />
          <NumberField label="max_attempts" min={0} step={1} value={retry?.max_attempts} diags={diagsAt("retry.max_attempts")} onChange={(v) => set("retry.max_attempts", v)} />
          <TextField label="initial_backoff" hint="e.g. 0.1s" value={retry?.initial_backoff} diags={diagsAt("retry.initial_backoff")} onChange={(v) => set("retry.initial_backoff", v)} />
          <TextField label="max_backoff" hint="e.g. 2s" value={retry?.max_backoff} diags={diagsAt("retry.max_backoff")} onChange={(v) => set("retry.max_backoff", v)} />
          <NumberField label="multiplier" min={1} value={retry?.multiplier} diags={diagsAt("retry.multiplier")} onChange={(v) => set("retry.multiplier", v)} />
          <LinesField label="retry_on" hint="gRPC codes, one per line" value={retry?.retry_on} diags={diagsUnder("retry.retry_on")} onChange={(v) => set("retry.retry_on", v)} />
        </fieldset>
        <fieldset className="message">
          <legend>compensate</legend>
          <Problems id={`step-${index}-comp`} diags={diagsAt("compensate")} />
          <TextField label="compensate call" hint="run if the execution fails later" list={listId} mono value={comp?.call} diags={diagsAt("compensate.call")} onChange={(v) => set("compensate.call", v)} />
          {compAction ? (
            <MessageForm fields={compAction.inputFields} value={comp?.with} base="compensate.with" set={(p, v) => set(`compensate.with.${p}`, v)} diagsAt={diagsAt} />
          ) : (
            comp && <JsonField label="compensate with" value={comp.with} diags={diagsUnder("compensate.with")} onChange={(v) => set("compensate.with", v)} />
          )}
        </fieldset>
      </Section>
    </form>
  );
}

// ---------------------------------------------------------------------------------------------
// The pattern form.

const INPUT_TYPES = ["string", "integer", "number", "boolean", "array", "object"];

export function PatternForm({ doc, diags, edit, focus }: { doc: PatternDoc; diags: Diag[]; edit: Edit; focus?: "input" | "output" }) {
  const at = (p: string) => diags.filter((d) => d.path === p);
  const under = (p: string) => diags.filter((d) => d.path === p || d.path.startsWith(`${p}.`) || d.path.startsWith(`${p}[`));
  const set = (path: string, v: Json | undefined, label?: string) => edit(label ?? `Set ${path}`, (d) => setPatternField(d, path, v), `pattern:${path}`);
  const input = isObj(doc.input) ? doc.input : undefined;
  const props = input && isObj(input.properties) ? input.properties : {};
  const required = input && Array.isArray(input.required) ? input.required.filter((x): x is string => typeof x === "string") : [];
  const output = isObj(doc.output) ? doc.output : {};
  const triggers = Array.isArray(doc.on) ? doc.on : [];
  const schedule = isObj(doc.schedule) ? doc.schedule : undefined;
  const tags = Array.isArray(doc.tags) ? doc.tags.map(String) : [];
  const known = new Set(["name", "version", "description", "owner", "visibility", "durability", "timeout", "tags"]);
  const general = diags.filter((d) => d.path === "" || (!known.has(d.path.split(/[.[]/)[0]) && !/^(input|output|on|schedule|steps)\b/.test(d.path)));

  const setInput = (fn: (i: JsonObj) => JsonObj, label: string) =>
    edit(label, (d) => {
      const cur = isObj(d.input) ? d.input : { type: "object" };
      return setPatternField(d, "input", fn(cur));
    });
  const setProps = (fn: (p: JsonObj) => JsonObj, label: string) =>
    setInput((i) => withKey(i, "properties", fn(isObj(i.properties) ? i.properties : {})), label);

  return (
    <form className="inspector-form" aria-label="Pattern" onSubmit={(e) => e.preventDefault()}>
      <h2>Pattern</h2>
      <Problems id="pattern-general" diags={general} />
      <Section title="General" open={focus === undefined}>
        <TextField label="name" value={doc.name} diags={at("name")} onChange={(v) => set("name", v ?? "")} />
        <TextField label="version" hint="semver" value={doc.version} diags={at("version")} onChange={(v) => set("version", v ?? "")} />
        <TextField label="description" multiline value={doc.description} diags={at("description")} onChange={(v) => set("description", v)} />
        <TextField label="owner" value={doc.owner} diags={at("owner")} onChange={(v) => set("owner", v)} />
        <SelectField label="visibility" value={doc.visibility} options={["private", "tenant", "public"]} empty="(default: private)" diags={at("visibility")} onChange={(v) => set("visibility", v)} />
        <SelectField label="durability" value={doc.durability} options={["ephemeral", "durable"]} empty="(default: ephemeral)" diags={at("durability")} onChange={(v) => set("durability", v)} />
        <TextField label="timeout" hint="whole execution, e.g. 30s" value={doc.timeout} diags={at("timeout")} onChange={(v) => set("timeout", v)} />
        <TextField
          label="tags"
          hint="comma-separated"
          value={tags.join(", ")}
          diags={under("tags")}
          onChange={(v) => {
            const list = (v ?? "").split(",").map((t) => t.trim()).filter(Boolean);
            set("tags", list.length ? list : undefined);
          }}
        />
      </Section>
      <Section title={`Input schema (${Object.keys(props).length})`} open={focus === "input" || under("input").length > 0}>
        <Problems id="pattern-input" diags={under("input")} />
        {Object.entries(props).map(([k, s]) => (
          <fieldset key={k} className="prop">
            <legend>input.{k}</legend>
            <CommitField
              label="name"
              value={k}
              onCommit={(to) => to && to !== k && setProps((p) => renameKey(p, k, to), `Rename input ${k} to ${to}`)}
            />
            <SelectField
              label="type"
              value={isObj(s) ? s.type : undefined}
              options={INPUT_TYPES}
              empty="(any)"
              onChange={(t) => setProps((p) => ({ ...p, [k]: withKey(isObj(p[k]) ? (p[k] as JsonObj) : {}, "type", t) }), `Set input ${k} type`)}
            />
            <CheckField
              label="required"
              value={required.includes(k)}
              onChange={(on) =>
                setInput((i) => {
                  const r = on ? [...required, k] : required.filter((x) => x !== k);
                  return withKey(i, "required", r.length ? r : undefined);
                }, `${on ? "Require" : "Do not require"} input ${k}`)
              }
            />
            <button
              type="button"
              onClick={() =>
                setInput((i) => {
                  const p = { ...(isObj(i.properties) ? i.properties : {}) };
                  delete p[k];
                  const r = required.filter((x) => x !== k);
                  return withKey(withKey(i, "properties", p), "required", r.length ? r : undefined);
                }, `Remove input ${k}`)
              }
            >
              Remove input {k}
            </button>
          </fieldset>
        ))}
        <button
          type="button"
          onClick={() => {
            let n = 1;
            while (`field_${n}` in props) n++;
            setProps((p) => ({ ...p, [`field_${n}`]: { type: "string" } }), `Add input field_${n}`);
          }}
        >
          Add an input
        </button>
      </Section>
      <Section title={`Output mapping (${Object.keys(output).length})`} open={focus === "output" || under("output").length > 0}>
        {Object.entries(output).map(([k, v]) => (
          <fieldset key={k} className="prop">
            <legend>output.{k}</legend>
            <CommitField label="key" value={k} onCommit={(to) => to && to !== k && edit(`Rename output ${k} to ${to}`, (d) => setPatternField(d, "output", renameKey(output, k, to)))} />
            {isObj(v) || Array.isArray(v) ? (
              <JsonField label="value" value={v} diags={under(`output.${k}`)} onChange={(x) => set(`output.${k}`, x)} />
            ) : (
              <TextField label="value" hint="${{ }} expression" mono value={v} diags={under(`output.${k}`)} onChange={(x) => set(`output.${k}`, x ?? "")} />
            )}
            <button type="button" onClick={() => set(`output.${k}`, undefined, `Remove output ${k}`)}>
              Remove output {k}
            </button>
          </fieldset>
        ))}
        <button
          type="button"
          onClick={() => {
            let n = 1;
            while (`result_${n}` in output) n++;
            set(`output.result_${n}`, "${{ input }}", `Add output result_${n}`);
          }}
        >
          Add an output
        </button>
      </Section>
      <Section title={`Triggers: on (${triggers.length})`} open={under("on").length > 0}>
        {triggers.map((t, k) => (
          <fieldset key={k} className="prop">
            <legend>on[{k}]</legend>
            <Problems id={`on-${k}`} diags={at(`on[${k}]`)} />
            <TextField label={`on[${k}] event`} value={isObj(t) ? t.event : undefined} diags={at(`on[${k}].event`)} onChange={(v) => set(`on[${k}].event`, v ?? "")} />
            <TextField label={`on[${k}] filter`} mono value={isObj(t) ? t.filter : undefined} diags={at(`on[${k}].filter`)} onChange={(v) => set(`on[${k}].filter`, v)} />
            <JsonField label={`on[${k}] input`} value={isObj(t) ? t.input : undefined} diags={under(`on[${k}].input`)} onChange={(v) => set(`on[${k}].input`, v)} />
            <button type="button" onClick={() => edit(`Remove trigger ${k}`, (d) => setPatternField(d, "on", triggers.length > 1 ? triggers.filter((_, i) => i !== k) : undefined))}>
              Remove trigger {k}
            </button>
          </fieldset>
        ))}
        <button type="button" onClick={() => edit("Add a trigger", (d) => setPatternField(d, "on", [...triggers, { event: "" }]))}>
          Add a trigger
        </button>
      </Section>
      <Section title="Schedule" open={schedule !== undefined || under("schedule").length > 0}>
        <Problems id="schedule" diags={at("schedule")} />
        <TextField label="cron" hint="5 or 6 fields, or @hourly" mono value={schedule?.cron} diags={at("schedule.cron")} onChange={(v) => set("schedule.cron", v)} />
        <TextField label="timezone" hint="IANA, default UTC" value={schedule?.timezone} diags={at("schedule.timezone")} onChange={(v) => set("schedule.timezone", v)} />
        <SelectField label="overlap" value={schedule?.overlap} options={["skip", "buffer_one", "allow_all"]} empty="(default: skip)" diags={at("schedule.overlap")} onChange={(v) => set("schedule.overlap", v)} />
        <TextField label="catchup_window" hint="e.g. 300s" value={schedule?.catchup_window} diags={at("schedule.catchup_window")} onChange={(v) => set("schedule.catchup_window", v)} />
      </Section>
    </form>
  );
}

// ---------------------------------------------------------------------------------------------
// A selected connection.

export function EdgePanel({ edge, onRemove }: { edge: GraphEdge; onRemove: () => void }) {
  const from = layoutKey(edge.source);
  const to = layoutKey(edge.target);
  return (
    <section className="inspector-form" aria-label="Connection">
      <h2>Connection</h2>
      {edge.kind === "depends_on" ? (
        <p>
          <code>{to}</code> depends on <code>{from}</code>.
        </p>
      ) : (
        <p>
          <code>{edge.target === "$output" ? edge.targetField : `steps.${to}.${edge.targetField}`}</code> reads{" "}
          <code>{edge.source === "$input" ? `input.${edge.sourcePath}` : `steps.${from}${edge.sourcePath ? `.${edge.sourcePath}` : ""}`}</code>.
        </p>
      )}
      <button type="button" className="danger" onClick={onRemove}>
        Remove connection
      </button>
      <p className="muted small">Removing it removes {edge.kind === "depends_on" ? "the depends_on entry" : <code>{edge.targetField}</code>} (Delete key too).</p>
    </section>
  );
}


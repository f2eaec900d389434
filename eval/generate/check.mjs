// Checks eval/generate/tasks.yaml against the catalogs' protos.
//
//   node eval/generate/check.mjs [tasks.yaml]   (needs ui/node_modules)
//
// For every task: the goal is well-formed; the reference parses, uses only direct whole-value
// wiring (`${{ input.X }}` / `${{ steps.ID.path }}`), calls RPCs that exist in the task's catalog,
// sets request fields that exist, reads response paths that exist, and wires values of the same
// type; typed goals' inputs are exactly the reference's input properties, goal outputs exactly its
// output keys, `end_with` its last call and `use` among its calls. Prints a summary.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const require = createRequire(path.join(root, 'ui/package.json'));
const YAML = require('yaml');
const buf = path.join(root, 'ui/node_modules/.bin/buf');

const CATALOGS = {
  demo: path.join(root, 'proto/demo'),
  commerce: path.join(root, 'eval/catalogs/commerce'),
  media: path.join(root, 'eval/catalogs/media'),
};

const SCALARS = {
  TYPE_DOUBLE: 'double', TYPE_FLOAT: 'float', TYPE_INT64: 'int64', TYPE_UINT64: 'uint64',
  TYPE_INT32: 'int32', TYPE_FIXED64: 'fixed64', TYPE_FIXED32: 'fixed32', TYPE_BOOL: 'bool',
  TYPE_STRING: 'string', TYPE_BYTES: 'bytes', TYPE_UINT32: 'uint32', TYPE_SFIXED32: 'sfixed32',
  TYPE_SFIXED64: 'sfixed64', TYPE_SINT32: 'sint32', TYPE_SINT64: 'sint64',
};
const JSON_TYPE = {
  double: 'number', float: 'number', int32: 'integer', int64: 'integer', uint32: 'integer',
  uint64: 'integer', sint32: 'integer', sint64: 'integer', fixed32: 'integer', fixed64: 'integer',
  sfixed32: 'integer', sfixed64: 'integer', bool: 'boolean', string: 'string', bytes: 'string',
};

/** Loads a catalog: messages (full name → fields), enums, methods (`pkg.Svc/M` → method). */
function loadCatalog(dir) {
  const out = execFileSync(buf, ['build', dir, '-o', '-#format=json'], { cwd: root, maxBuffer: 1 << 28 });
  const image = JSON.parse(out.toString());
  const messages = new Map();
  const enums = new Set();
  const methods = new Map();
  const addMessages = (prefix, list) => {
    for (const m of list ?? []) {
      const full = `${prefix}.${m.name}`;
      const fields = new Map();
      for (const f of m.field ?? []) {
        const type = f.type === 'TYPE_MESSAGE' || f.type === 'TYPE_ENUM' ? f.typeName.replace(/^\./, '') : SCALARS[f.type];
        fields.set(f.name, { type, kind: f.type === 'TYPE_MESSAGE' ? 'message' : f.type === 'TYPE_ENUM' ? 'enum' : 'scalar', repeated: f.label === 'LABEL_REPEATED' });
      }
      messages.set(full, { fields, mapEntry: !!m.options?.mapEntry });
      addMessages(full, m.nestedType);
      for (const e of m.enumType ?? []) enums.add(`${full}.${e.name}`);
    }
  };
  for (const file of image.file) {
    const pkg = file.package ?? '';
    addMessages(pkg, file.messageType);
    for (const e of file.enumType ?? []) enums.add(`${pkg}.${e.name}`);
    for (const s of file.service ?? []) {
      for (const m of s.method ?? []) {
        methods.set(`${pkg}.${s.name}/${m.name}`, {
          input: m.inputType.replace(/^\./, ''),
          output: m.outputType.replace(/^\./, ''),
          serverStreaming: !!m.serverStreaming,
          clientStreaming: !!m.clientStreaming,
        });
      }
    }
  }
  return { messages, enums, methods };
}

const catalogs = Object.fromEntries(Object.entries(CATALOGS).map(([k, d]) => [k, loadCatalog(d)]));

const errors = [];
const fail = (id, msg) => errors.push(`${id}: ${msg}`);

/** The field type at `dotted` inside message `msg`, or an error string. */
function resolvePath(cat, msg, dotted) {
  let current = { type: msg, kind: 'message', repeated: false };
  for (const part of dotted.split('.')) {
    if (current.kind !== 'message' || current.repeated) return `cannot step into ${current.type}${current.repeated ? ' (repeated)' : ''} for ${part}`;
    const m = cat.messages.get(current.type);
    if (!m) return `unknown message ${current.type}`;
    const f = m.fields.get(part);
    if (!f) return `no field ${part} in ${current.type}`;
    current = f;
  }
  return current;
}

const sameType = (a, b) => a.type === b.type && a.kind === b.kind && a.repeated === b.repeated;
const typeName = (t) => `${t.repeated ? 'repeated ' : ''}${t.type}`;

/** JSON Schema type of a goal input type (proto scalar or a message/enum full name). */
function schemaTypeOf(cat, protoType) {
  if (JSON_TYPE[protoType]) return JSON_TYPE[protoType];
  if (protoType === 'google.protobuf.Timestamp') return 'string';
  if (cat.enums.has(protoType)) return 'string';
  if (cat.messages.has(protoType)) return 'object';
  return null;
}

const REF = /^\$\{\{ (?:input\.([A-Za-z_][A-Za-z0-9_]*)|steps\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_.]*)) \}\}$/;

/** The message or enum a property declares, as the synthesizer writes it: `description: "a shop.common.v1.Address"`. */
const declared = (prop) => prop.description?.match(/^an? ([A-Za-z_][A-Za-z0-9_.]*?)( value)?$/)?.[1];

/** Whether a JSON-schema input property fits a proto field. */
function inputFits(cat, prop, field) {
  if (field.repeated) return prop.type === 'array';
  if (field.kind === 'scalar') return prop.type === JSON_TYPE[field.type];
  if (field.kind === 'enum') return prop.type === 'string' && declared(prop) === field.type;
  if (field.type === 'google.protobuf.Timestamp') return prop.type === 'string';
  return prop.type === 'object' && declared(prop) === field.type;
}

const tasksText = readFileSync(process.argv[2] ?? path.join(here, 'tasks.yaml'), 'utf8');
const tasks = YAML.parse(tasksText);
const seen = new Set();
const summary = {};
const sizes = {};
let wirings = 0;

for (const t of tasks) {
  const id = t.id;
  if (seen.has(id)) fail(id, 'duplicate id');
  seen.add(id);
  const cat = catalogs[t.catalog];
  if (!cat) { fail(id, `unknown catalog ${t.catalog}`); continue; }
  if (!id.startsWith(`${t.catalog}-`)) fail(id, 'id prefix does not match the catalog');
  const g = t.goal ?? {};
  for (const k of Object.keys(g)) if (!['text', 'inputs', 'outputs', 'end_with', 'use'].includes(k)) fail(id, `unknown goal key ${k}`);
  if (!g.text && !g.outputs && !g.end_with && !g.use) fail(id, 'goal needs text, outputs, end_with or use');
  const kind = g.text ? 'words' : g.end_with ? 'end_with' : 'typed';
  if (kind === 'typed' && !(g.inputs && g.outputs)) fail(id, 'typed goal without inputs and outputs');
  summary[t.catalog] ??= { words: 0, end_with: 0, typed: 0 };
  summary[t.catalog][kind]++;
  for (const a of [g.end_with, ...(g.use ?? [])].filter(Boolean)) if (!cat.methods.has(a)) fail(id, `goal names unknown action ${a}`);

  let ref;
  try { ref = YAML.parse(t.reference); } catch (e) { fail(id, `reference does not parse: ${e.message}`); continue; }
  if (ref.name !== id.replace(/-/g, '_')) fail(id, `name ${ref.name}`);
  if (ref.version !== '1.0.0') fail(id, 'version');
  if (!ref.description) fail(id, 'no description');
  if (ref.durability !== 'ephemeral') fail(id, 'durability');
  for (const k of Object.keys(ref)) if (!['name', 'version', 'description', 'durability', 'input', 'steps', 'output'].includes(k)) fail(id, `unexpected key ${k}`);

  const input = ref.input ?? { type: 'object', properties: {} };
  if (input.type !== 'object') fail(id, 'input is not an object schema');
  const props = input.properties ?? {};
  for (const r of input.required ?? []) if (!props[r]) fail(id, `required ${r} is not a property`);
  if (g.inputs) {
    const names = g.inputs.map((i) => i.name);
    const keys = Object.keys(props);
    if (names.length !== keys.length || names.some((n) => !props[n])) fail(id, `input properties ${keys} differ from goal inputs ${names}`);
    for (const i of g.inputs) {
      const st = schemaTypeOf(cat, i.type);
      if (!st) fail(id, `goal input ${i.name} has unknown type ${i.type}`);
      else if (props[i.name] && props[i.name].type !== st) fail(id, `input ${i.name}: schema type ${props[i.name].type}, goal type ${i.type}`);
      if (props[i.name] && (cat.enums.has(i.type) || cat.messages.has(i.type)) && declared(props[i.name]) !== i.type) fail(id, `input ${i.name}: description should be "a ${i.type}${cat.enums.has(i.type) ? ' value' : ''}"`);
    }
  }

  const steps = ref.steps ?? [];
  if (!steps.length) fail(id, 'no steps');
  sizes[steps.length] = (sizes[steps.length] ?? 0) + 1;
  const done = new Map(); // step id → method
  const usedInputs = new Set();
  /** Type of a `${{ … }}` reference, or null after reporting. */
  const refType = (where, value) => {
    const m = typeof value === 'string' && value.match(REF);
    if (!m) { fail(id, `${where}: not a direct reference: ${JSON.stringify(value)}`); return null; }
    if (m[1]) {
      usedInputs.add(m[1]);
      if (!props[m[1]]) { fail(id, `${where}: no input ${m[1]}`); return null; }
      return { input: props[m[1]] };
    }
    const method = done.get(m[2]);
    if (!method) { fail(id, `${where}: no earlier step ${m[2]}`); return null; }
    const streamMsg = method.output;
    const r = resolvePath(cat, streamMsg, m[3]);
    if (typeof r === 'string') { fail(id, `${where}: ${r}`); return null; }
    return { field: r };
  };
  for (const s of steps) {
    for (const k of Object.keys(s)) if (!['id', 'call', 'with', 'stream'].includes(k)) fail(id, `step ${s.id}: unexpected key ${k}`);
    if (!s.id || done.has(s.id)) fail(id, `step id ${s.id} missing or repeated`);
    const method = cat.methods.get(s.call);
    if (!method) { fail(id, `step ${s.id}: unknown action ${s.call}`); continue; }
    if (method.serverStreaming !== !!s.stream) fail(id, `step ${s.id}: stream should be ${method.serverStreaming}`);
    const req = cat.messages.get(method.input);
    for (const [field, value] of Object.entries(s.with ?? {})) {
      const target = req.fields.get(field);
      if (!target) { fail(id, `step ${s.id}: no field ${field} in ${method.input}`); continue; }
      const src = refType(`step ${s.id}.${field}`, value);
      if (!src) continue;
      if (src.input && !inputFits(cat, src.input, target)) fail(id, `step ${s.id}.${field}: input of type ${src.input.type} into ${typeName(target)}`);
      if (src.field) {
        wirings++;
        if (!sameType(src.field, target)) fail(id, `step ${s.id}.${field}: ${typeName(src.field)} into ${typeName(target)}`);
      }
    }
    done.set(s.id, method);
  }
  const calls = steps.map((s) => s.call);
  if (g.end_with && calls[calls.length - 1] !== g.end_with) fail(id, `last call ${calls[calls.length - 1]} is not ${g.end_with}`);
  for (const u of g.use ?? []) if (!calls.includes(u)) fail(id, `does not call ${u}`);

  const output = ref.output ?? {};
  if (!Object.keys(output).length) fail(id, 'no output');
  if (g.outputs) {
    const keys = Object.keys(output);
    if (keys.length !== g.outputs.length || g.outputs.some((o) => !(o in output))) fail(id, `output keys ${keys} differ from goal outputs ${g.outputs}`);
  }
  for (const [k, v] of Object.entries(output)) refType(`output ${k}`, v);
  for (const p of Object.keys(props)) if (!usedInputs.has(p)) fail(id, `input ${p} is never used`);
}

if (errors.length) {
  console.error(errors.join('\n'));
  console.error(`${errors.length} problem(s)`);
  process.exit(1);
}
const rpcs = Object.fromEntries(Object.entries(catalogs).map(([k, c]) => [k, c.methods.size]));
console.log(`${tasks.length} tasks OK; ${wirings} step-to-step wirings`);
console.log('rpcs per catalog:', JSON.stringify(rpcs));
console.log('tasks by catalog and goal kind:', JSON.stringify(summary));
console.log('steps per reference:', JSON.stringify(sizes));

// A seeded generator of pattern documents covering every feature of the document (for the round
// trip tests): calls with nested objects and lists, depends_on, when, for_each + concurrency,
// retry, timeout, compensate, stream, emit, wait_for (single and `any`), triggers (`on`),
// schedule, an input schema, an output mapping and tags — with keys in proto order or shuffled,
// and strings YAML finds awkward.

import type { Json, JsonObj, PatternDoc } from "./types";

export type Rng = () => number;

/** mulberry32: small, fast, deterministic. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T,>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const chance = (r: Rng, p: number) => r() < p;
const int = (r: Rng, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

const ACTIONS = [
  "demo.user.v1.UserService/CreateUser",
  "demo.user.v1.UserService/GetUser",
  "demo.asset.v1.AssetService/UploadAsset",
  "demo.notification.v1.NotificationService/SendEmail",
  "demo.notification.v1.NotificationService/SendPush",
  "demo.broadcast.v1.BroadcastService/Subscribe",
  "acme.billing.v2.Invoices/Create",
];
const WORDS = ["user", "asset", "mail", "push", "charge", "audit", "fetch", "notify", "sync", "load"];
const FIELDS = ["owner_id", "email", "title", "body", "to", "subject", "count", "items", "meta", "token"];
const AWKWARD = [
  "yes",
  "no",
  "null",
  "~",
  "1.0",
  "0x1F",
  "1e3",
  "#not a comment",
  "a: b",
  "- dash",
  "  leading spaces",
  "trailing ",
  "multi\nline\ntext",
  "quote ' and \" both",
  "tab\there",
  "unicode: héllo → 世界 ✓",
  "{braces}",
  "[brackets]",
  "*star",
  "&amp",
  "!bang",
  "%percent",
  "@at",
  "`tick`",
  "",
  "true",
  "2024-01-01",
  "12:30",
];

function shuffle<T>(r: Rng, xs: T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Same entries, keys shuffled (sometimes): the round trip must keep any order. */
function order(r: Rng, o: JsonObj): JsonObj {
  if (!chance(r, 0.3)) return o;
  const out: JsonObj = {};
  for (const k of shuffle(r, Object.keys(o))) out[k] = o[k];
  return out;
}

function expr(r: Rng, earlier: string[], inputs: string[]): string {
  const refs: string[] = [];
  if (earlier.length && chance(r, 0.7)) refs.push(`steps.${pick(r, earlier)}.${pick(r, ["user.id", "message_id", "asset.url", "token", "allowed", "items"])}`);
  if (inputs.length && (refs.length === 0 || chance(r, 0.4))) refs.push(`input.${pick(r, inputs)}`);
  if (refs.length === 0) return "${{ 1 + 2 }}";
  const shapes = [
    () => `\${{ ${refs[0]} }}`,
    () => `Hello \${{ ${refs[0]} }}!`,
    () => `\${{ has(${refs[0]}) ? ${refs[0]} : 'none' }}`,
    () => `\${{ ${refs.join(" + ")} }}`,
    () => `${pick(r, AWKWARD)} \${{ ${refs[0]} }} and \${{ ${refs[refs.length - 1]} }}`,
    () => `\${{ {'k': '}}'}.k + string(${refs[0]}) }}`,
    () => `\${{ ${refs[0]}.size() }}`,
  ];
  return pick(r, shapes)();
}

function value(r: Rng, depth: number, earlier: string[], inputs: string[]): Json {
  const roll = r();
  if (depth < 3 && roll < 0.15) {
    const o: JsonObj = {};
    for (let i = int(r, 0, 3); i > 0; i--) o[pick(r, FIELDS)] = value(r, depth + 1, earlier, inputs);
    return o;
  }
  if (depth < 3 && roll < 0.25) {
    return Array.from({ length: int(r, 0, 3) }, () => value(r, depth + 1, earlier, inputs));
  }
  if (roll < 0.6) return expr(r, earlier, inputs);
  if (roll < 0.72) return pick(r, AWKWARD);
  if (roll < 0.8) return int(r, -1000, 100000);
  if (roll < 0.85) return Math.round(r() * 1e6) / 1e3;
  if (roll < 0.92) return chance(r, 0.5);
  if (roll < 0.95) return null;
  return `plain ${pick(r, WORDS)}`;
}

function duration(r: Rng): string {
  return pick(r, ["1s", "0.1s", "2.5s", "30s", "86400s", "0.250s"]);
}

function step(r: Rng, i: number, earlier: string[], inputs: string[]): JsonObj {
  const id = `${pick(r, WORDS)}_${i}`;
  const s: JsonObj = { id };
  const kind = r();
  if (kind < 0.75) {
    s.call = pick(r, ACTIONS);
    if (chance(r, 0.85)) {
      const w: JsonObj = {};
      for (let n = int(r, 0, 5); n > 0; n--) w[pick(r, FIELDS)] = value(r, 0, earlier, inputs);
      s.with = order(r, w);
    }
  } else if (kind < 0.87) {
    const e: JsonObj = { type: `${pick(r, WORDS)}.${pick(r, ["created", "done", "failed"])}` };
    if (chance(r, 0.8)) {
      const d: JsonObj = {};
      for (let n = int(r, 1, 4); n > 0; n--) d[pick(r, FIELDS)] = value(r, 1, earlier, inputs);
      e.data = d;
    }
    if (chance(r, 0.5)) e.subject = expr(r, earlier, inputs);
    s.emit = order(r, e);
  } else {
    const w: JsonObj = {};
    if (chance(r, 0.5)) {
      w.event = `${pick(r, WORDS)}.verified`;
      if (chance(r, 0.8)) w.match = chance(r, 0.3) ? `event.data.id == input.${pick(r, inputs.length ? inputs : ["x"])}` : `\${{ event.data.id == ${earlier.length ? `steps.${pick(r, earlier)}.user.id` : "input.id"} }}`;
    } else {
      w.any = Array.from({ length: int(r, 1, 3) }, () => {
        const b: JsonObj = { event: `${pick(r, WORDS)}.${pick(r, ["ok", "no"])}` };
        if (chance(r, 0.7)) b.match = `\${{ event.subject == ${earlier.length ? `steps.${pick(r, earlier)}.token` : "input.id"} }}`;
        return b;
      });
    }
    if (chance(r, 0.6)) w.timeout = duration(r);
    s.wait_for = order(r, w);
  }
  if (earlier.length && chance(r, 0.3)) s.depends_on = shuffle(r, earlier).slice(0, int(r, 1, Math.min(3, earlier.length)));
  if (chance(r, 0.3)) s.when = chance(r, 0.8) ? `\${{ ${earlier.length ? `steps.${pick(r, earlier)}.allowed` : "true"} }}` : `has(input.${pick(r, inputs.length ? inputs : ["x"])})`;
  if (chance(r, 0.25)) {
    s.for_each = chance(r, 0.7) ? `\${{ ${earlier.length ? `steps.${pick(r, earlier)}.items` : "input.items"} }}` : "input.items";
    if (chance(r, 0.6)) s.concurrency = int(r, 1, 64);
  }
  if (chance(r, 0.3)) {
    const rp: JsonObj = { max_attempts: int(r, 1, 5) };
    if (chance(r, 0.6)) rp.initial_backoff = duration(r);
    if (chance(r, 0.6)) rp.max_backoff = duration(r);
    if (chance(r, 0.4)) rp.multiplier = pick(r, [1.5, 2, 3]);
    if (chance(r, 0.4)) rp.retry_on = shuffle(r, ["UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "INTERNAL"]).slice(0, int(r, 1, 3));
    s.retry = order(r, rp);
  }
  if (chance(r, 0.3)) s.timeout = duration(r);
  if (chance(r, 0.2)) {
    const c: JsonObj = { call: pick(r, ACTIONS) };
    if (chance(r, 0.8)) c.with = { user_id: `\${{ steps.${id}.user.id }}`, note: value(r, 1, earlier, inputs) };
    s.compensate = c;
  }
  if (chance(r, 0.15)) s.stream = true;
  return order(r, s);
}

/** The `n`th document of the corpus for `seed`. */
export function generatePattern(seed: number): PatternDoc {
  const r = rng(seed);
  const doc: JsonObj = {};
  doc.name = `gen_${seed}_${pick(r, WORDS)}`;
  doc.version = `${int(r, 0, 3)}.${int(r, 0, 20)}.${int(r, 0, 99)}`;
  if (chance(r, 0.7)) doc.description = pick(r, AWKWARD) + " " + pick(r, WORDS);
  if (chance(r, 0.5)) doc.owner = `team-${pick(r, WORDS)}`;
  if (chance(r, 0.5)) doc.visibility = pick(r, ["private", "tenant", "public"]);
  if (chance(r, 0.5)) doc.durability = pick(r, ["ephemeral", "durable"]);
  if (chance(r, 0.5)) doc.timeout = duration(r);
  const inputs = shuffle(r, ["email", "name", "avatar_url", "items", "id", "count"]).slice(0, int(r, 0, 5));
  if (inputs.length || chance(r, 0.2)) {
    const props: JsonObj = {};
    for (const k of inputs) props[k] = k === "items" ? { type: "array", items: { type: "string" } } : { type: pick(r, ["string", "integer", "boolean"]) };
    const schema: JsonObj = { type: "object" };
    if (inputs.length && chance(r, 0.7)) schema.required = inputs.slice(0, int(r, 1, inputs.length));
    schema.properties = props;
    doc.input = order(r, schema);
  }
  const steps: JsonObj[] = [];
  const earlier: string[] = [];
  for (let i = 0, n = int(r, 0, 12); i < n; i++) {
    const s = step(r, i, earlier, inputs);
    steps.push(s);
    earlier.push(s.id as string);
  }
  if (steps.length || chance(r, 0.5)) doc.steps = steps;
  if (chance(r, 0.8)) {
    const o: JsonObj = {};
    for (let n = int(r, 1, 4); n > 0; n--) o[`${pick(r, FIELDS)}_${n}`] = chance(r, 0.85) ? expr(r, earlier, inputs) : value(r, 1, earlier, inputs);
    doc.output = o;
  }
  if (chance(r, 0.6)) doc.tags = shuffle(r, WORDS).slice(0, int(r, 0, 4));
  if (chance(r, 0.3)) {
    doc.on = Array.from({ length: int(r, 1, 2) }, () => {
      const t: JsonObj = { event: `${pick(r, WORDS)}.created` };
      if (chance(r, 0.6)) t.filter = "${{ event.data.plan == 'pro' }}";
      if (chance(r, 0.6)) t.input = { user_id: "${{ event.data.user_id }}", source: "${{ event.source }}" };
      return order(r, t);
    });
  }
  if (chance(r, 0.25)) {
    const sc: JsonObj = { cron: pick(r, ["0 */5 * * * *", "@hourly", "30 2 * * MON-FRI"]) };
    if (chance(r, 0.6)) sc.timezone = pick(r, ["UTC", "Europe/Paris", "America/New_York"]);
    if (chance(r, 0.6)) sc.overlap = pick(r, ["skip", "buffer_one", "allow_all"]);
    if (chance(r, 0.4)) sc.catchup_window = duration(r);
    doc.schedule = order(r, sc);
  }
  return order(r, doc);
}

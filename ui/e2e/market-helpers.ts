// What the catalog and marketplace tests share: calls to the real API (Connect JSON) to set up
// patterns and to check what the server holds after the UI acted, and small pattern documents.
import { expect } from "@playwright/test";
import { servers } from "./fixtures";

/** POSTs `body` to a NexusService method over Connect JSON; resolves with the JSON answer. */
export async function api<T = Record<string, unknown>>(
  method: string,
  body: unknown,
  opts: { server?: string; key?: string } = {},
): Promise<T> {
  const server = opts.server ?? servers().nexus;
  const res = await fetch(`${server}/nexus.v1.NexusService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(opts.key ? { authorization: `Bearer ${opts.key}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  expect(res.ok, `${method}: ${res.status} ${text}`).toBe(true);
  return JSON.parse(text) as T;
}

export async function register(pattern: Record<string, unknown>, opts: { server?: string; key?: string } = {}): Promise<void> {
  await api("RegisterPattern", { pattern }, opts);
}

type Doc = Record<string, unknown> & { steps: Record<string, unknown>[] };

/** A small valid pattern: create a user, then welcome them by email. */
export function userDoc(name: string, version = "1.0.0", extra: Record<string, unknown> = {}): Doc {
  return {
    name,
    version,
    description: `Creates a user and welcomes them (${name}).`,
    visibility: "public",
    tags: ["e2e"],
    input: {
      type: "object",
      required: ["email", "name"],
      properties: { email: { type: "string" }, name: { type: "string" } },
    },
    steps: [
      {
        id: "user",
        call: "demo.user.v1.UserService/CreateUser",
        with: { email: "${{ input.email }}", display_name: "${{ input.name }}" },
      },
      {
        id: "welcome",
        call: "demo.notification.v1.NotificationService/SendEmail",
        with: { to: "${{ input.email }}", subject: "Welcome", body: "Your account ${{ steps.user.user.id }} is ready." },
      },
      {
        id: "audit",
        call: "demo.notification.v1.NotificationService/SendPush",
        with: { user_id: "${{ steps.user.user.id }}", title: "audit", body: "created" },
      },
    ],
    output: { user_id: "${{ steps.user.user.id }}" },
    ...extra,
  };
}

/** The next version of `userDoc`: `welcome`'s subject changed, `audit` removed, `push` added. */
export function userDocV2(name: string, version = "2.0.0"): Doc {
  const d = userDoc(name, version);
  d.steps = [
    d.steps[0],
    { ...d.steps[1], with: { ...(d.steps[1].with as object), subject: "Welcome aboard" } },
    {
      id: "push",
      call: "demo.notification.v1.NotificationService/SendPush",
      with: { user_id: "${{ steps.user.user.id }}", title: "Hi", body: "${{ steps.welcome.message_id }}" },
    },
  ];
  return d;
}

/** A one-step pattern calling `call` with no input. */
export function oneStep(name: string, call: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const withs: Record<string, Record<string, string>> = {
    "demo.user.v1.UserService/CreateUser": { email: "a@b.c", display_name: "A" },
    "demo.notification.v1.NotificationService/SendPush": { user_id: "u", title: "t", body: "b" },
    "demo.notification.v1.NotificationService/SendEmail": { to: "a@b.c", subject: "s", body: "b" },
  };
  return {
    name,
    version: "1.0.0",
    visibility: "public",
    description: `One call of ${call}.`,
    steps: [{ id: "only", call, with: withs[call] ?? {} }],
    ...extra,
  };
}

import { expect, expectAccessible, open, screenshot, servers, signIn, test, unique } from "./fixtures";

async function api<T>(method: string, body: unknown, server = servers().nexus, key?: string): Promise<T> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const r = await fetch(`${server}/nexus.v1.NexusService/${method}`, { method: "POST", headers, body: JSON.stringify(body) });
  const json = (await r.json()) as T;
  if (!r.ok) throw new Error(`${method}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

interface Executions {
  executions?: { id: string; status: string; idempotency_key?: string }[];
}

/** The welcome_series execution the event `eventId` started (its key names the event). */
async function startedBy(eventId: string) {
  const r = await api<Executions>("ListExecutions", { pattern_name: "welcome_series", page_size: 100 });
  return (r.executions ?? []).find((e) => e.idempotency_key?.includes(eventId));
}

test("an event published from the page shows in the live tail, starts the triggered pattern, and a second one resumes its wait", async ({ page }) => {
  const userId = unique("usr");
  await open(page, "#/events");
  await expect(page.getByTestId("tail-status")).toContainText("Listening");

  const publish = page.getByRole("region", { name: "Publish an event" });
  await publish.getByLabel("Type").fill("user.created");
  await publish
    .getByLabel("Data (JSON object)")
    .fill(JSON.stringify({ user_id: userId, email: `${userId}@example.com`, name: "Grace" }));
  await publish.getByRole("button", { name: "Publish" }).click();
  await expect(publish.getByRole("status")).toContainText("Published");
  const eventId = (await publish.getByRole("status").textContent())?.split(" · ").pop()?.trim() ?? "";
  expect(eventId).not.toBe("");

  // Live: the tail shows it without a reload.
  const tail = page.getByRole("list", { name: "Received events" });
  await expect(tail.getByText(userId).first()).toBeAttached();
  await expect(tail.locator("li").filter({ hasText: "user.created" }).first()).toBeVisible();

  // The trigger started welcome_series for this user; it waits for user.verified.
  await expect.poll(async () => (await startedBy(eventId))?.status, { timeout: 15_000 }).toBe("EXECUTION_STATUS_RUNNING");

  await publish.getByLabel("Type").fill("user.verified");
  await publish.getByLabel("Data (JSON object)").fill(JSON.stringify({ user_id: userId }));
  await publish.getByRole("button", { name: "Publish" }).click();
  await expect(publish.getByRole("status")).toContainText("Published");
  await expect.poll(async () => (await startedBy(eventId))?.status, { timeout: 15_000 }).toBe("EXECUTION_STATUS_SUCCEEDED");
  await expect(tail.locator("li").filter({ hasText: "user.verified" }).first()).toBeVisible();

  // The same id again is a duplicate: nothing happens twice.
  const id = unique("evt");
  await publish.getByLabel("Id (optional: the same id publishes once)").fill(id);
  await publish.getByRole("button", { name: "Publish" }).click();
  await expect(publish.getByRole("status")).toContainText(`Published`);
  await publish.getByRole("button", { name: "Publish" }).click();
  await expect(publish.getByRole("status")).toContainText("Already published");

  await expectAccessible(page);
  await screenshot(page, "events");
});

test("the tail's type list and CEL filter narrow what arrives; a bad filter is the server's message", async ({ page }) => {
  const tag = unique("t");
  await open(page, "#/events");
  const tailRegion = page.getByRole("region", { name: "Live events" });
  await tailRegion.getByLabel("Types").fill("order.paid");
  await tailRegion.getByLabel("Filter (CEL over event)").fill(`\${{ event.data.tag == '${tag}' && event.data.amount > 10 }}`);
  await tailRegion.getByRole("button", { name: "Restart" }).click();
  await expect(page.getByTestId("tail-status")).toContainText("Listening");

  for (const [type, amount] of [["order.paid", 5], ["order.refunded", 50], ["order.paid", 50]] as const) {
    await api("PublishEvent", { event: { type, data: { tag, amount } } });
  }
  const tail = page.getByRole("list", { name: "Received events" });
  await expect(tail.locator("li")).toHaveCount(1);
  await expect(tail.locator("li").first()).toContainText("order.paid");
  await tail.locator("li summary").first().click();
  await expect(tail.locator("li pre").first()).toContainText('"amount": 50');

  await tailRegion.getByLabel("Filter (CEL over event)").fill("${{ steps.x.y }}");
  await tailRegion.getByRole("button", { name: /Start|Restart/ }).click();
  await expect(tailRegion.getByRole("alert")).toContainText("INVALID_ARGUMENT");
  await expect(tailRegion.getByRole("alert")).toContainText("filter");
});

test("event types: registered from the page with a JSON Schema, listed; a broken schema is refused with the reason", async ({ page }) => {
  const type = `${unique("shop")}.order.paid`.replace(/_/g, "-");
  await open(page, "#/events");
  const types = page.getByRole("region", { name: "Event types" });
  const form = types.getByRole("form", { name: "Register an event type" });
  await form.getByLabel("Type", { exact: true }).fill(type);
  await form.getByLabel("Description").fill("An order was paid.");
  await form.getByLabel("JSON Schema of data").fill('{"type": "object", "properties": {"amount": {"type": "number"}}');
  await form.getByRole("button", { name: "Register type" }).click();
  await expect(form.getByRole("alert")).toContainText("schema: not JSON");

  await form.getByLabel("JSON Schema of data").fill('{"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}');
  await form.getByRole("button", { name: "Register type" }).click();
  await expect(types.getByRole("row").filter({ hasText: type })).toContainText("An order was paid.");
});

test("a viewer key sees events but may not publish or register types", async ({ page }) => {
  await signIn(page, servers().viewerKey, "#/events");
  await expect(page.getByTestId("tail-status")).toContainText("Listening");
  const publish = page.getByRole("region", { name: "Publish an event" });
  await expect(publish.getByRole("button", { name: "Publish" })).toBeDisabled();
  await expect(publish).toContainText("needs the runner role");
  await expect(page.getByRole("form", { name: "Register an event type" })).toHaveCount(0);
});

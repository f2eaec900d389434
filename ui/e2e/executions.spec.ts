// Executions: run from the generated form, the live timeline (steps, retries, compensation,
// stream messages, cancel, reconnection, a parked durable execution), the list with filters and
// pages, and a key that may not run.
import type { Page } from "@playwright/test";
import { expect, expectAccessible, open, screenshot, servers, signIn, test, unique } from "./fixtures";

type Json = Record<string, unknown>;

/** A Connect-JSON call to a server's API (as curl would), optionally with a key. */
async function api(method: string, body: Json, server: "nexus" | "secured" = "nexus", key?: string): Promise<Json> {
  const r = await fetch(`${servers()[server]}/nexus.v1.NexusService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = (await r.json()) as Json;
  if (!r.ok) throw new Error(`${method}: HTTP ${r.status} ${JSON.stringify(json)}`);
  return json;
}

async function register(pattern: Json, server: "nexus" | "secured" = "nexus", key?: string): Promise<void> {
  await api("RegisterPattern", { pattern: { version: "1.0.0", visibility: "tenant", ...pattern } }, server, key);
}

/** Runs `name` through the UI's form page (already filled) and returns the execution id. */
async function submitRun(page: Page, name: string): Promise<string> {
  await page.getByRole("button", { name: new RegExp(`^Run ${name}@`) }).click();
  await expect(page).toHaveURL(/#\/executions\/[0-9a-f]{32}$/);
  return /#\/executions\/([0-9a-f]{32})$/.exec(page.url())![1];
}

/** A generated form field by its name (required ones are marked " * (required)"). */
const field = (page: Page, name: string) => page.getByLabel(new RegExp(`^${name}( \\* \\(required\\))?$`));
const status = (page: Page) => page.getByTestId("execution-status");
const stepRow = (page: Page, id: string) => page.locator(`tr[data-step="${id}"]`);

test("run user_creation from the generated form and watch the timeline reach SUCCEEDED with each step's duration", async ({ page }) => {
  await open(page, "#/run/user_creation");
  await expect(page.getByRole("heading", { name: "Run user_creation" })).toBeVisible();
  // The form comes from the input schema: email and name required, avatar_url optional.
  await expect(field(page, "email")).toBeVisible();
  await expect(field(page, "name")).toBeVisible();
  await expect(field(page, "avatar_url")).toBeVisible();
  const email = `${unique("grace")}@example.com`;
  await field(page, "email").fill(email);
  await field(page, "name").fill("Grace Hopper");
  await field(page, "avatar_url").fill("https://example.com/grace.png");
  await expectAccessible(page);
  await screenshot(page, "run");

  const id = await submitRun(page, "user_creation");
  await expect(page.getByTestId("execution-id")).toHaveText(id);
  await expect(status(page)).toHaveText("SUCCEEDED");
  await expect(page.getByRole("link", { name: "user_creation@1.0.0" })).toHaveAttribute("href", "#/marketplace/user_creation");
  for (const step of ["user", "avatar", "welcome", "announce"]) {
    await expect(stepRow(page, step)).toContainText("SUCCEEDED");
    await expect(stepRow(page, step).locator(".tl-duration")).toHaveText(/^\d+(\.\d+)? (ms|s)$/);
    await expect(stepRow(page, step).locator(".tl-bar")).not.toHaveCount(0);
  }
  await expect(page.getByTestId("execution-duration")).toHaveText(/^\d+(\.\d+)? (ms|s)$/);
  // A step's details: its call, attempts, request and response.
  await stepRow(page, "user").getByRole("button", { name: /user/ }).click();
  await expect(page.getByRole("table", { name: "Attempts of user" })).toContainText("OK");
  await page.getByText("Request of user").click();
  await expect(page.getByLabel("Request of user")).toContainText(email);
  await page.getByText("Response of user").click();
  await expect(page.getByLabel("Response of user")).toContainText('"id": "usr_');
  await expect(page.getByLabel("Output", { exact: true })).toContainText("user_id");
  await expectAccessible(page);
  await screenshot(page, "timeline");

  // What the server holds.
  const e = await api("GetExecution", { execution_id: id });
  expect(e.status).toBe("EXECUTION_STATUS_SUCCEEDED");
  expect(e.input).toEqual({ email, name: "Grace Hopper", avatar_url: "https://example.com/grace.png" });
});

test("the form is generated from every schema type, flags wrong fields, and sends typed values", async ({ page }) => {
  const name = unique("form_kinds");
  await register({
    name,
    description: "Every input type the form knows.",
    input: {
      type: "object",
      required: ["email", "count", "mode", "address"],
      properties: {
        email: { type: "string", description: "Where the report goes." },
        count: { type: "integer", minimum: 1, default: 2 },
        ratio: { type: "number" },
        mode: { type: "string", enum: ["fast", "slow"] },
        verbose: { type: "boolean" },
        tags: { type: "array", items: { type: "string" } },
        address: { type: "object", required: ["city"], properties: { city: { type: "string" }, zip: { type: "string" } } },
      },
    },
    steps: [
      {
        id: "mail",
        call: "demo.notification.v1.NotificationService/SendEmail",
        with: { to: "${{ input.email }}", subject: "mode ${{ input.mode }}", body: "to ${{ input.address.city }}" },
      },
    ],
    output: { count: "${{ input.count }}", tags: "${{ input.tags }}", city: "${{ input.address.city }}" },
  });
  await open(page, `#/run/${name}`);
  await expect(page.getByText("Where the report goes.")).toBeVisible();
  // Defaults fill in; required marks; nested object and list.
  await expect(field(page, "count")).toHaveValue("2");
  await expect(page.getByRole("group", { name: /address/ })).toBeVisible();
  await expect(page.getByRole("group", { name: "tags" })).toContainText("No items.");
  await field(page, "count").fill("2.5");
  await page.getByRole("button", { name: `Run ${name}@1.0.0` }).click();
  const summary = page.getByRole("alert");
  await expect(summary).toContainText("4 fields need attention");
  await expect(summary).toContainText("email, count, mode, address.city");
  await expect(field(page, "count")).toHaveAttribute("aria-invalid", "true");
  await expect(page.getByText("Must be a whole number.")).toBeVisible();
  await expect(page.getByText("Required.")).toHaveCount(3);
  await expect(page).toHaveURL(new RegExp(`#/run/${name}$`));
  await expectAccessible(page);

  await field(page, "email").fill("ops@example.com");
  await field(page, "count").fill("3");
  await field(page, "ratio").fill("0.25");
  await field(page, "mode").selectOption("slow");
  await field(page, "verbose").selectOption("true");
  await page.getByRole("button", { name: "Add tags item" }).click();
  await page.getByRole("button", { name: "Add tags item" }).click();
  await field(page, "tags item 1").fill("a");
  await field(page, "tags item 2").fill("b");
  await field(page, "city").fill("Paris");
  // The JSON view shows what will be sent, and the form comes back from it.
  await page.getByLabel("JSON", { exact: true }).check();
  await expect(page.getByLabel("Input (JSON)")).toHaveValue(/"ratio": 0.25/);
  await page.getByLabel("Form", { exact: true }).check();
  await expect(field(page, "tags item 2")).toHaveValue("b");
  const id = await submitRun(page, name);
  await expect(status(page)).toHaveText("SUCCEEDED");
  const e = await api("GetExecution", { execution_id: id });
  expect(e.input).toEqual({
    email: "ops@example.com",
    count: 3,
    ratio: 0.25,
    mode: "slow",
    verbose: true,
    tags: ["a", "b"],
    address: { city: "Paris" },
  });
  expect(e.output).toEqual({ count: 3, tags: ["a", "b"], city: "Paris" });
});

test("the server's refusals are shown verbatim: input schema (raw JSON) and the backend's own check", async ({ page }) => {
  await open(page, "#/run/user_creation");
  await page.getByLabel("JSON", { exact: true }).check();
  await page.getByLabel("Input (JSON)").fill('{"name": "No Email"}');
  await page.getByRole("button", { name: "Run user_creation@1.0.0" }).click();
  const alert = page.getByRole("alert");
  await expect(alert).toContainText("INVALID_ARGUMENT: the input does not match the pattern's input schema: input.email: required property is missing");
  await expect(page).toHaveURL(/#\/run\/user_creation$/);
  await page.getByLabel("Input (JSON)").fill('{"name": ');
  await page.getByRole("button", { name: "Run user_creation@1.0.0" }).click();
  await expect(page.getByRole("alert").first()).toContainText("The input is not valid JSON");

  // A blank email passes the schema, and the backend refuses it: the execution fails and says why.
  await page.getByLabel("Input (JSON)").fill('{"email": "   ", "name": "Blank"}');
  const id = await submitRun(page, "user_creation");
  await expect(status(page)).toHaveText(/FAILED|COMPENSATED/);
  await expect(page.getByTestId("execution-error")).toContainText("INVALID_ARGUMENT");
  await expect(page.getByTestId("execution-error")).toContainText("email must not be empty");
  await expect(stepRow(page, "user")).toContainText("FAILED");
  const e = await api("GetExecution", { execution_id: id });
  expect((e.error as Json).code).toBe("INVALID_ARGUMENT");
});

test("a streaming pattern's messages appear live, before the execution finishes", async ({ page }) => {
  await open(page, "#/run/subscribe_live_stream");
  await field(page, "broadcast_id").fill(unique("public-show"));
  await field(page, "user_id").fill("viewer-1");
  // 80 chunks, one every 50 ms (the demo's pace): about 4 s of stream.
  await field(page, "max_chunks").fill("80");
  await submitRun(page, "subscribe_live_stream");
  const seen = await page.waitForFunction(() => {
    const n = document.querySelectorAll('[aria-label="Stream messages"] li').length;
    const s = document.querySelector('[data-testid="execution-status"]')?.textContent;
    return n >= 2 ? { n, s } : null;
  });
  const early = (await seen.jsonValue()) as { n: number; s: string };
  expect(early.s).toBe("RUNNING");
  expect(early.n).toBeLessThan(80);
  await expect(page.getByRole("log", { name: "Stream messages" })).toContainText("chunk 2 of 80");
  await expect(status(page)).toHaveText("SUCCEEDED", { timeout: 20_000 });
  await expect(page.getByTestId("message-count")).toHaveText("80 received");
  await expect(page.getByRole("log", { name: "Stream messages" }).locator("li")).toHaveCount(80);
  await expect(stepRow(page, "live")).toContainText("SUCCEEDED");
  await expect(page.getByLabel("Output", { exact: true })).toContainText('"last_chunk": 80');
  await expectAccessible(page);
  await screenshot(page, "timeline-stream");
});

test("retries and compensation are visible: a failing step retried, the completed step compensated", async ({ page }) => {
  const name = unique("retry_comp");
  await register({
    name,
    input: { type: "object", required: ["email"], properties: { email: { type: "string" } } },
    steps: [
      {
        id: "first",
        call: "demo.user.v1.UserService/CreateUser",
        with: { email: "${{ input.email }}", display_name: "First" },
        compensate: { call: "demo.user.v1.UserService/DeleteUser", with: { user_id: "${{ steps.first.user.id }}" } },
      },
      {
        id: "second",
        call: "demo.user.v1.UserService/CreateUser",
        depends_on: ["first"],
        // The same email again: ALREADY_EXISTS, retried twice, then the execution fails.
        with: { email: "${{ input.email }}", display_name: "Second" },
        retry: { max_attempts: 3, initial_backoff: "0.05s", max_backoff: "0.1s", multiplier: 2, retry_on: ["ALREADY_EXISTS"] },
      },
    ],
  });
  await open(page, `#/run/${name}`);
  await field(page, "email").fill(`${unique("twice")}@example.com`);
  const id = await submitRun(page, name);
  await expect(status(page)).toHaveText("COMPENSATED");
  await expect(page.getByTestId("execution-error")).toContainText("ALREADY_EXISTS");
  await expect(stepRow(page, "second")).toContainText("FAILED");
  await expect(stepRow(page, "second")).toContainText("3 (2 retries)");
  await expect(stepRow(page, "second").locator(".tl-bar.tl-failed")).toHaveCount(3);
  await expect(stepRow(page, "first")).toContainText("compensated");
  await expect(stepRow(page, "first").locator(".tl-bar.tl-compensation")).toHaveCount(1);
  await page.getByRole("button", { name: "Expand all" }).click();
  const attempts = page.getByRole("table", { name: "Attempts of second" });
  await expect(attempts.locator("tbody tr")).toHaveCount(3);
  await expect(attempts).toContainText("ALREADY_EXISTS");
  const compensation = page.locator(".tl-compensation-info");
  await expect(compensation).toContainText("demo.user.v1.UserService/DeleteUser");
  await expect(compensation).toContainText("SUCCEEDED");
  await expectAccessible(page);
  await screenshot(page, "timeline-compensation");

  const e = await api("GetExecution", { execution_id: id });
  const steps = e.steps as Json[];
  expect((steps.find((s) => s.step_id === "second")!.attempts as Json[]).length).toBe(3);
  expect((steps.find((s) => s.step_id === "first")!.compensation as Json).status).toBe("STEP_STATUS_SUCCEEDED");
});

test("a running execution is followed live from another tab and cancelled there; both tabs see CANCELLED", async ({ page, context }) => {
  await open(page, "#/run/subscribe_live_stream");
  await field(page, "broadcast_id").fill(unique("public-long"));
  await field(page, "user_id").fill("viewer-2");
  await field(page, "max_chunks").fill("2000");
  const id = await submitRun(page, "subscribe_live_stream");
  await expect(page.getByRole("log", { name: "Stream messages" }).locator("li").nth(1)).toBeVisible();

  // Another tab: GetExecution (still running) then WatchExecution.
  const other = await context.newPage();
  await open(other, `#/executions/${id}`);
  await expect(status(other)).toHaveText("RUNNING");
  await expect(other.getByText("Live", { exact: true })).toBeVisible();
  await expect(other.getByRole("log", { name: "Stream messages" }).locator("li").nth(2)).toBeVisible();
  await expectAccessible(other);
  await other.getByLabel("Reason").fill("enough chunks");
  await other.getByRole("button", { name: "Cancel execution" }).click();
  await expect(status(other)).toHaveText("CANCELLED");
  await expect(status(page)).toHaveText("CANCELLED");
  await expect(other.getByTestId("execution-error")).toContainText("CANCELLED");
  await expect(other.getByRole("button", { name: "Cancel execution" })).toHaveCount(0);
  const e = await api("GetExecution", { execution_id: id });
  expect(e.status).toBe("EXECUTION_STATUS_CANCELLED");
  expect(Number((e.steps as Json[]).length)).toBeGreaterThan(0);
});

test("navigating away does not cancel a run started here; the timeline picks its stream up again", async ({ page }) => {
  await open(page, "#/run/subscribe_live_stream");
  await field(page, "broadcast_id").fill(unique("public-nav"));
  await field(page, "user_id").fill("viewer-3");
  await field(page, "max_chunks").fill("50");
  const id = await submitRun(page, "subscribe_live_stream");
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Graph" }).click();
  await expect(page.getByRole("heading", { name: "Graph" })).toBeVisible();
  await page.waitForTimeout(800);
  await page.goBack();
  await expect(page).toHaveURL(new RegExp(`#/executions/${id}$`));
  await expect(status(page)).toHaveText("SUCCEEDED", { timeout: 20_000 });
  // Every message, including those that arrived while another page was shown.
  await expect(page.getByTestId("message-count")).toHaveText("50 received");
  const e = await api("GetExecution", { execution_id: id });
  expect(e.status).toBe("EXECUTION_STATUS_SUCCEEDED");
});

test("the timeline reconnects when its stream drops while the execution still runs", async ({ page, browser }) => {
  await open(page, "#/run/subscribe_live_stream");
  await field(page, "broadcast_id").fill(unique("public-drop"));
  await field(page, "user_id").fill("viewer-4");
  await field(page, "max_chunks").fill("600");
  const id = await submitRun(page, "subscribe_live_stream");

  // A watcher in its own browser context whose first WatchExecution streams break: the first
  // answers headers and then ends without a message or trailers (a dropped stream), the next two
  // lose the connection. It keeps trying, then follows the execution live.
  const ctx = await browser.newContext();
  let watches = 0;
  await ctx.route("**/nexus.v1.NexusService/WatchExecution", async (route) => {
    watches += 1;
    if (watches === 1) await route.fulfill({ status: 200, contentType: "application/grpc-web+proto", body: Buffer.alloc(0) });
    else if (watches <= 3) await route.abort("connectionreset");
    else await route.continue();
  });
  const watcher = await ctx.newPage();
  await open(watcher, `#/executions/${id}`);
  await expect(watcher.getByText("Reconnecting…", { exact: true })).toBeVisible();
  await expect(watcher.getByText("Live", { exact: true })).toBeVisible({ timeout: 15_000 });
  await expect(watcher.getByRole("log", { name: "Stream messages" }).locator("li").nth(1)).toBeVisible();
  expect(watches).toBe(4);
  await expect(status(watcher)).toHaveText("RUNNING");
  await api("CancelExecution", { execution_id: id, reason: "seen enough" });
  await expect(status(watcher)).toHaveText("CANCELLED");
  // After the end, the full record: every step with its duration.
  await expect(stepRow(watcher, "access")).toContainText("SUCCEEDED");
  await expect(stepRow(watcher, "live")).toContainText("CANCELLED");
  await expect(stepRow(watcher, "live").locator(".tl-duration")).toHaveText(/^\d+(\.\d+)? (ms|s)$/);
  await expect(status(page)).toHaveText("CANCELLED");
  await ctx.close();
});

test("a durable execution waiting for an event shows as parked and finishes when the event comes; another is cancelled while parked", async ({ page }) => {
  const name = unique("wait_for_go");
  const type = `${name}.go`;
  await register({
    name,
    durability: "durable",
    input: { type: "object", required: ["key"], properties: { key: { type: "string" } } },
    steps: [
      { id: "go", wait_for: { event: type, match: "${{ event.data.key == input.key }}", timeout: "60s" } },
      {
        id: "mail",
        call: "demo.notification.v1.NotificationService/SendEmail",
        depends_on: ["go"],
        with: { to: "ops@example.com", subject: "go ${{ input.key }}", body: "resumed by ${{ steps.go.id }}" },
      },
    ],
    output: { message_id: "${{ steps.mail.message_id }}" },
  });
  await open(page, `#/run/${name}`);
  await field(page, "key").fill("k1");
  const id = await submitRun(page, name);
  await expect(status(page)).toHaveText("RUNNING");
  await expect(page.getByText(/Waiting \(parked\)/)).toBeVisible();
  await expect(page.getByText(/Parked until an event resumes it/)).toBeVisible();
  await expect(page.getByRole("button", { name: "Cancel execution" })).toBeEnabled();
  await expect(stepRow(page, "mail")).toContainText("PENDING");
  // Listed while it waits (durable executions are journaled).
  const listed = await api("ListExecutions", { pattern_name: name });
  expect((listed.executions as Json[]).map((x) => x.status)).toEqual(["EXECUTION_STATUS_RUNNING"]);
  await api("PublishEvent", { event: { type, source: "e2e", id: unique("evt"), data: { key: "k1" } } });
  await expect(status(page)).toHaveText("SUCCEEDED", { timeout: 15_000 });
  await expect(stepRow(page, "mail")).toContainText("SUCCEEDED");
  await expect(page.getByLabel("Output", { exact: true })).toContainText("message_id");
  expect((await api("GetExecution", { execution_id: id })).status).toBe("EXECUTION_STATUS_SUCCEEDED");

  // A second one, parked, is cancelled from the page: it ends CANCELLED and never mails.
  await open(page, `#/run/${name}`);
  await field(page, "key").fill("k2");
  const second = await submitRun(page, name);
  await expect(page.getByText(/Waiting \(parked\)/)).toBeVisible();
  await page.getByLabel("Reason").fill("no longer needed");
  await page.getByRole("button", { name: "Cancel execution" }).click();
  await expect(status(page)).toHaveText("CANCELLED", { timeout: 15_000 });
  const cancelled = await api("GetExecution", { execution_id: second });
  expect(cancelled.status).toBe("EXECUTION_STATUS_CANCELLED");
  expect(JSON.stringify(cancelled.error)).toContain("no longer needed");
});

test("the executions list filters by pattern and status, pages, and opens a timeline", async ({ page }) => {
  const name = unique("listed");
  await register({
    name,
    input: { type: "object", required: ["email"], properties: { email: { type: "string" } } },
    steps: [{ id: "user", call: "demo.user.v1.UserService/CreateUser", with: { email: "${{ input.email }}", display_name: "L" } }],
  });
  const emails = Array.from({ length: 52 }, (_, i) => `${name}.${i}@example.com`);
  for (let i = 0; i < emails.length; i += 13) {
    await Promise.all(emails.slice(i, i + 13).map((email) => api("ExecutePattern", { pattern_name: name, input: { email } })));
  }
  // The same email again fails (ALREADY_EXISTS).
  await fetch(`${servers().nexus}/nexus.v1.NexusService/ExecutePattern`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ pattern_name: name, input: { email: emails[0] } }),
  });

  await open(page, "#/executions");
  await page.getByLabel("Pattern", { exact: true }).fill(name);
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(new RegExp(`#/executions\\?pattern=${name}$`));
  const rows = page.locator(".ex-table tbody tr");
  await expect(rows).toHaveCount(50);
  await expect(page.getByRole("button", { name: "Older" })).toBeEnabled();
  await expect(page.getByRole("button", { name: "Newer" })).toBeDisabled();
  await expectAccessible(page);
  await screenshot(page, "executions");
  await page.getByRole("button", { name: "Older" }).click();
  await expect(rows).toHaveCount(3);
  await expect(page.getByText("Page 2")).toBeVisible();
  await expect(page.getByRole("button", { name: "Older" })).toBeDisabled();
  await page.getByRole("button", { name: "Newer" }).click();
  await expect(rows).toHaveCount(50);

  await page.getByLabel("Status", { exact: true }).selectOption("FAILED");
  await expect(page).toHaveURL(new RegExp(`#/executions\\?pattern=${name}&status=FAILED$`));
  await expect(rows).toHaveCount(1);
  await expect(rows.first()).toContainText("FAILED");
  await expect(rows.first()).toContainText("ALREADY_EXISTS");
  await expect(rows.first()).toContainText(`${name}@1.0.0`);
  await page.getByLabel("Status", { exact: true }).selectOption("CANCELLED");
  await expect(page.getByText("No execution matches these filters.")).toBeVisible();
  await page.getByLabel("Status", { exact: true }).selectOption("FAILED");
  await rows.first().getByRole("link").first().click();
  await expect(page).toHaveURL(/#\/executions\/[0-9a-f]{32}$/);
  await expect(status(page)).toHaveText("FAILED");
  await expect(stepRow(page, "user")).toContainText("FAILED");
  // The list reads the URL: a shared link opens the same filter.
  await open(page, `#/executions?pattern=${name}&status=succeeded`);
  await expect(page.getByLabel("Status", { exact: true })).toHaveValue(String(3));
  await expect(rows).toHaveCount(50);
  // An execution that does not exist says so, in the server's words.
  await open(page, "#/executions/0123456789abcdef0123456789abcdef");
  await expect(page.getByRole("alert")).toContainText("NOT_FOUND: no execution `0123456789abcdef0123456789abcdef`");
});

test("a viewer key cannot run or cancel: the controls are disabled and say why", async ({ page, browser }) => {
  const name = unique("viewer_cannot_run");
  const admin = servers().adminKey;
  await register(
    {
      name,
      input: { type: "object", required: ["broadcast_id"], properties: { broadcast_id: { type: "string" } } },
      steps: [
        {
          id: "live",
          call: "demo.broadcast.v1.BroadcastService/Subscribe",
          stream: true,
          with: { broadcast_id: "${{ input.broadcast_id }}", token: "t", max_chunks: 2000 },
        },
      ],
    },
    "secured",
    admin,
  );
  await signIn(page, servers().viewerKey, `#/run/${name}`);
  await expect(page.getByRole("heading", { name: `Run ${name}` })).toBeVisible();
  await field(page, "broadcast_id").fill("public-viewer");
  await expect(page.getByRole("button", { name: `Run ${name}@1.0.0` })).toBeDisabled();
  await expect(page.getByText("Your key (viewer) may not run patterns: running needs the runner or admin role.")).toBeVisible();
  await expectAccessible(page);

  // An admin runs it in another browser; the viewer follows it live and may not cancel it.
  const adminCtx = await browser.newContext();
  const adminPage = await adminCtx.newPage();
  await signIn(adminPage, admin, `#/run/${name}`);
  await field(adminPage, "broadcast_id").fill(unique("public-viewer"));
  const id = await submitRun(adminPage, name);
  await page.goto(`${servers().secured}/ui/#/executions/${id}`);
  await expect(status(page)).toHaveText("RUNNING");
  await expect(page.getByRole("log", { name: "Stream messages" }).locator("li").nth(1)).toBeVisible();
  await expect(page.getByRole("button", { name: "Cancel execution" })).toBeDisabled();
  await expect(page.getByText("Your key may not cancel executions (runner or admin role needed).")).toBeVisible();
  await expectAccessible(page);
  await adminPage.getByRole("button", { name: "Cancel execution" }).click();
  await expect(status(page)).toHaveText("CANCELLED");
  await expect(status(adminPage)).toHaveText("CANCELLED");
  await adminCtx.close();
  // The viewer reads the tenant's executions.
  await page.goto(`${servers().secured}/ui/#/executions?pattern=${name}`);
  await expect(page.locator(".ex-table tbody tr")).toHaveCount(1);
  await expect(page.locator(".ex-table tbody tr")).toContainText("CANCELLED");
  const listed = await api("ListExecutions", { pattern_name: name }, "secured", admin);
  expect((listed.executions as Json[]).map((e) => e.id)).toEqual([id]);
});

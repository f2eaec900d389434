// AI-assisted patterns against real servers: the demo mines `user_creation` then
// `subscribe_live_stream` (run for 4 users) into one composite suggestion, listed with its
// evidence, opened in the composer as an unregistered draft and accepted (registered); a goal in
// words generates type-checked candidates; the server's refusal of a bad goal is shown by the
// form; a viewer key sees what it may not register, and why. What the server holds after the UI
// acted is checked through the API.
import type { Page } from "@playwright/test";
import { expect, expectAccessible, open, screenshot, servers, signIn, test, unique } from "./fixtures";
import { api } from "./market-helpers";

const COMPOSITE = "user_creation_then_subscribe_live_stream";
const TITLE = "Run user_creation then subscribe_live_stream as one pattern";

interface HeldSuggestion {
  id: string;
  kind: string;
  title: string;
  support: string;
  execution_ids?: string[];
  based_on?: string[];
  pattern?: { name: string; version: string };
}

/** Collects console errors (the UI must log none). */
function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  return errors;
}

async function composite(opts: { server?: string; key?: string; patternName?: string } = {}): Promise<HeldSuggestion> {
  const r = await api<{ suggestions?: HeldSuggestion[] }>("SuggestPatterns", { pattern_name: opts.patternName ?? "" }, opts);
  const s = r.suggestions?.find((x) => x.kind === "SUGGESTION_KIND_COMPOSITE" && (!opts.patternName || x.pattern?.name.startsWith(opts.patternName)));
  expect(s, `a composite among ${JSON.stringify(r.suggestions?.map((x) => x.title))}`).toBeTruthy();
  return s!;
}

const card = (page: Page, id: string) => page.getByTestId(`suggestion-${id}`);
const composerNode = (page: Page, stepId: string) => page.locator(`.react-flow__node[data-id="step:${stepId}"]`);

test("the demo's composite suggestion is listed with its evidence, filters and YAML", async ({ page }) => {
  const errors = watchConsole(page);
  const held = await composite();
  expect(held.pattern?.name).toBe(COMPOSITE);

  await open(page, "#/assist");
  await expect(page.getByRole("heading", { name: "AI-assisted patterns", level: 1 })).toBeVisible();
  await expect(page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Assist" })).toHaveAttribute("aria-current", "page");
  await expect(page.getByRole("tab", { name: "Suggestions" })).toHaveAttribute("aria-selected", "true");
  const c = card(page, held.id);
  await expect(c.getByRole("heading", { name: TITLE })).toBeVisible();
  await expect(c).toContainText("Composite");
  await expect(c.getByTestId("support")).toHaveText(/^support \d+ executions$/);
  await expect(c.getByTestId("confidence")).toHaveText(/^confidence \d+ %$/);
  await expect(c).toContainText(/4 of \d+ executions of user_creation were followed/);
  await expect(c.getByTestId("gain")).toContainText("fewer client round trip");
  await expect(c).toContainText(`${COMPOSITE}@1.0.0`);

  // Evidence: every execution it rests on links to that execution's page.
  const evidence = c.getByRole("list", { name: "Evidence" }).getByRole("link");
  await expect(evidence).toHaveCount(held.execution_ids!.length);
  for (const id of held.execution_ids!) await expect(c.locator(`a[href="#/executions/${id}"]`)).toHaveText(id);
  const based = c.getByRole("list", { name: "Based on" });
  await expect(based.getByRole("link", { name: "user_creation@1.0.0" })).toHaveAttribute("href", "#/marketplace/user_creation?version=1.0.0");
  await expect(based.getByRole("link", { name: "subscribe_live_stream@1.0.0" })).toBeVisible();

  // The YAML, expandable.
  const toggle = c.getByRole("button", { name: "Show YAML" });
  await expect(toggle).toHaveAttribute("aria-expanded", "false");
  await toggle.click();
  await expect(c.getByRole("button", { name: "Hide YAML" })).toHaveAttribute("aria-expanded", "true");
  await expect(c.getByTestId("yaml")).toContainText("call: pattern:user_creation@1.0.0");
  await expect(c.getByTestId("yaml")).toContainText("user_id: ${{ steps.user_creation.user_id }}");
  await expectAccessible(page);
  await screenshot(page, "assist-suggestions");

  // Filters go to the server and into the address.
  await page.getByLabel("Kind").selectOption("retry_policy");
  await expect(page).toHaveURL(/kind=retry_policy/);
  await expect(c).toHaveCount(0);
  await expect(page.getByTestId("suggestions-empty")).toContainText("No suggestion matches these filters.");
  await expect(page.getByTestId("suggestions-empty")).toContainText("Suggestions come from real executions");
  await page.getByRole("button", { name: "Clear the filters" }).click();
  await expect(c).toBeVisible();
  await page.getByLabel("Pattern", { exact: true }).fill("subscribe_live_stream");
  await expect(page).toHaveURL(/pattern=subscribe_live_stream/);
  await expect(c).toBeVisible();
  await page.getByLabel("Pattern", { exact: true }).fill("welcome_series");
  await expect(page.getByTestId("suggestions-empty")).toBeVisible();
  await expect(c).toHaveCount(0);
  // A reload keeps the filters; Refresh asks again.
  await page.reload();
  await expect(page.getByLabel("Pattern", { exact: true })).toHaveValue("welcome_series");
  await page.getByLabel("Pattern", { exact: true }).fill("");
  await expect(c).toBeVisible();
  await page.getByRole("button", { name: "Refresh" }).click();
  await expect(page.getByRole("status").filter({ hasText: /suggestions? from \d+ executions analyzed/ })).toBeVisible();
  await expect(c).toBeVisible();

  // An evidence link opens the execution.
  const first = held.execution_ids![0];
  await c.locator(`a[href="#/executions/${first}"]`).click();
  await expect(page).toHaveURL(new RegExp(`#/executions/${first}$`));
  await expect(page.getByText("subscribe_live_stream").first()).toBeVisible();
  expect(errors).toEqual([]);
});

test("a suggestion opens in the composer as an unregistered draft with its two sub-pattern steps", async ({ page }) => {
  const errors = watchConsole(page);
  const held = await composite();
  await open(page, "#/assist");
  await card(page, held.id).getByRole("button", { name: "Open in composer" }).click();
  await expect(page).toHaveURL(/#\/composer\?draft=/);
  await expect(page.locator('[data-testid="canvas"][data-ready="true"]')).toBeVisible({ timeout: 15_000 });
  await expect(page.getByTestId("pattern-title")).toHaveText(COMPOSITE);
  await expect(page.getByTestId("step-count")).toHaveText("2 steps");
  await expect(composerNode(page, "user_creation")).toBeVisible();
  await expect(composerNode(page, "subscribe_live_stream")).toBeVisible();
  await expect(composerNode(page, "user_creation")).toContainText("user_creation@1.0.0");
  await expect(page.getByText(`Opened the suggestion “${TITLE}”: not registered yet.`)).toBeVisible();
  await expect(page.getByTestId("validation-status")).toHaveText(/^Valid/, { timeout: 15_000 });
  const yaml = await page.getByRole("textbox", { name: "YAML" }).inputValue();
  expect(yaml).toContain("call: pattern:subscribe_live_stream@1.0.0");

  // The draft survives a reload of the tab; a key from elsewhere says why it cannot open.
  await page.reload();
  await expect(composerNode(page, "subscribe_live_stream")).toBeVisible({ timeout: 15_000 });
  await open(page, "#/composer?draft=gone");
  await expect(page.getByRole("alert")).toContainText("Cannot open the draft: it is no longer kept in this tab");
  expect(errors).toEqual([]);
});

test("accepting the suggestion registers it, and the marketplace shows it", async ({ page }) => {
  const errors = watchConsole(page);
  const held = await composite();
  await open(page, "#/assist");
  const c = card(page, held.id);
  await c.getByRole("button", { name: "Accept" }).click();
  const result = c.getByTestId("register-result");
  await expect(result).toContainText(`Registered ${COMPOSITE}@1.0.0.`);
  await expect(c.getByRole("button", { name: "Accepted" })).toBeDisabled();

  const versions = await api<{ latest: string; versions: { version: string }[] }>("ListPatternVersions", { name: COMPOSITE });
  expect(versions.latest).toBe("1.0.0");
  const stored = await api<{ steps: { id: string; call: string }[] }>("GetPattern", { name: COMPOSITE, version: "1.0.0" });
  expect(stored.steps.map((s) => s.call)).toEqual(["pattern:user_creation@1.0.0", "pattern:subscribe_live_stream@1.0.0"]);

  await result.getByRole("link", { name: "Open in marketplace" }).click();
  await expect(page.getByRole("heading", { name: new RegExp(`^${COMPOSITE}`), level: 1 })).toBeVisible();
  await expect(page.getByTestId("step-node-user_creation")).toBeVisible();
  expect(errors).toEqual([]);
});

test("a goal in words generates type-checked candidates, best first, that open in the composer and register", async ({ page }) => {
  const errors = watchConsole(page);
  const goal = "create a user and send them a welcome email";
  await open(page, "#/assist");
  // The tabs by keyboard.
  await page.getByRole("tab", { name: "Suggestions" }).focus();
  await page.keyboard.press("ArrowRight");
  await expect(page).toHaveURL(/#\/assist\/generate$/);
  await expect(page.getByRole("tab", { name: "Generate" })).toHaveAttribute("aria-selected", "true");
  await expect(page.getByRole("tab", { name: "Generate" })).toBeFocused();

  const form = page.getByRole("form", { name: "Goal" });
  await form.getByLabel("What should the pattern do?").fill(goal);
  await form.getByRole("button", { name: "Generate" }).click();
  const first = page.getByTestId("candidate-1");
  const steps = first.getByTestId("steps");
  await expect(steps).toContainText("UserService/CreateUser");
  await expect(steps).toContainText("NotificationService/SendEmail");
  await expect(steps.getByRole("listitem")).toHaveCount(2);
  await expect(steps.getByRole("listitem").first()).toContainText("UserService/CreateUser");
  await expect(first.getByTestId("score")).toHaveText(/^score -?\d+\.\d\d$/);
  await expect(first).toContainText("synthesis");
  await expect(first.locator('[data-testid^="step-node-"]')).toHaveCount(2);
  await expect(page.getByTestId("notes")).toContainText("synthesis:");
  await expect(page.getByRole("status").filter({ hasText: /^\d+ candidates? in [\d.]+ ms(, best first)?\.$/ })).toBeVisible();

  // What the server answers to the same goal: the same first candidate.
  const held = await api<{ candidates: { score: number; pattern: { name: string; steps: { call: string }[] } }[] }>("GeneratePattern", { goal });
  expect(held.candidates[0].pattern.steps.map((s) => s.call)).toEqual([
    "demo.user.v1.UserService/CreateUser",
    "demo.notification.v1.NotificationService/SendEmail",
  ]);
  await expect(first).toContainText(`${held.candidates[0].pattern.name}@1.0.0`);
  const scores = (await page.getByTestId("score").allInnerTexts()).map((t) => Number(t.replace("score ", "")));
  expect([...scores].sort((a, b) => b - a)).toEqual(scores);

  await first.getByRole("button", { name: "Show YAML" }).click();
  await expect(first.getByTestId("yaml")).toContainText("call: demo.notification.v1.NotificationService/SendEmail");
  await expectAccessible(page);
  await screenshot(page, "assist-generate");

  // Register it under a name of ours.
  const name = unique("assist_gen");
  await form.getByLabel("Pattern name").fill(name);
  await form.getByRole("button", { name: "Generate" }).click();
  await expect(first).toContainText(`${name}@1.0.0`);
  await first.getByRole("button", { name: "Register" }).click();
  await expect(first.getByTestId("register-result")).toContainText(`Registered ${name}@1.0.0.`);
  const stored = await api<{ steps: { call: string }[] }>("GetPattern", { name, version: "1.0.0" });
  expect(stored.steps.map((s) => s.call)).toEqual(["demo.user.v1.UserService/CreateUser", "demo.notification.v1.NotificationService/SendEmail"]);

  // Open in the composer: an unregistered draft with the candidate's steps.
  await first.getByRole("button", { name: "Open in composer" }).click();
  await expect(page.locator('[data-testid="canvas"][data-ready="true"]')).toBeVisible({ timeout: 15_000 });
  await expect(page.getByTestId("pattern-title")).toHaveText(name);
  await expect(composerNode(page, "create_user")).toBeVisible();
  await expect(composerNode(page, "send_email")).toBeVisible();
  await expect(page.getByText(`Opened candidate #1 for “${goal}”: not registered yet.`)).toBeVisible();
  // Back: the form and the candidates are still there.
  await page.goBack();
  await expect(page.getByRole("tab", { name: "Generate" })).toHaveAttribute("aria-selected", "true");
  await expect(form.getByLabel("What should the pattern do?")).toHaveValue(goal);
  await expect(first).toContainText(`${name}@1.0.0`);

  // Named like a registered pattern: its changes against it, and the server's refusal to
  // register a different document under an existing version.
  await form.getByLabel("Pattern name").fill("user_creation");
  await form.getByRole("button", { name: "Generate" }).click();
  await expect(first).toContainText("user_creation@1.0.0");
  await first.getByText("Changes against the registered user_creation").click();
  await expect(first.getByTestId("changes")).toContainText("steps.create_user");
  await expect(first.getByTestId("changes")).toContainText("steps.avatar");
  await first.getByRole("button", { name: "Register" }).click();
  await expect(first.getByTestId("register-result")).toContainText("ALREADY_EXISTS: pattern user_creation@1.0.0 is already registered with a different document");
  await expect(first.getByTestId("register-result")).toHaveAttribute("role", "alert");
  expect(errors).toEqual([]);
});

test("typed inputs and outputs, pasted as a list, and the server's refusal of a bad end_with", async ({ page }) => {
  const errors = watchConsole(page);
  await open(page, "#/assist/generate");
  const form = page.getByRole("form", { name: "Goal" });

  // Nothing said: the form says what it needs before asking.
  await form.getByRole("button", { name: "Generate" }).click();
  await expect(page.getByTestId("generate-error")).toContainText("Say what the pattern should do");

  // `name:type` lists typed in a name box become rows.
  await form.getByLabel("Input 1 name").fill("email:string, name:string");
  await form.getByLabel("Input 1 name").press("Tab");
  await expect(form.getByLabel("Input 1 name")).toHaveValue("email");
  await expect(form.getByLabel("Input 1 type")).toHaveValue("string");
  await expect(form.getByLabel("Input 2 name")).toHaveValue("name");
  await expect(form.getByLabel("Input 2 type")).toHaveValue("string");
  await form.getByLabel("Output 1 name").fill("user_id");
  await form.getByRole("button", { name: "Add output" }).click();
  await expect(form.getByLabel("Output 2 name")).toBeFocused();
  await page.keyboard.type("message_id");
  await form.getByRole("button", { name: "Generate" }).click();
  const first = page.getByTestId("candidate-1");
  await expect(first.getByTestId("steps")).toContainText("UserService/CreateUser");
  await expect(first.getByRole("list", { name: "Why candidate 1" })).toContainText("output user_id ← UserService/CreateUser.user.id");

  // A duplicate input is caught here.
  await form.getByLabel("Input 2 name").fill("email");
  await expect(form.getByText("`email` is listed twice.")).toBeVisible();
  await expect(form.getByLabel("Input 2 name")).toHaveAttribute("aria-invalid", "true");
  await form.getByRole("button", { name: "Remove input 2" }).click();
  await expect(form.getByLabel("Input 2 name")).toHaveCount(0);

  // An action the catalog does not have: the server's message, next to the form.
  await form.getByLabel("End with").fill("demo.notification.v1.NotificationService/SendEmal");
  await form.getByRole("button", { name: "Generate" }).click();
  const error = page.getByTestId("generate-error");
  await expect(error).toContainText(
    "INVALID_ARGUMENT: end_with: `demo.notification.v1.NotificationService/SendEmal` is not an action in the catalog; did you mean `demo.notification.v1.NotificationService/SendEmail`?",
  );
  await expect(error).toHaveAttribute("role", "alert");
  await expectAccessible(page);

  // Use actions: chosen, listed, removable.
  await form.getByLabel("End with").fill("");
  await form.getByLabel("Action to use").fill("demo.notification.v1.NotificationService/SendPush");
  await form.getByLabel("Action to use").press("Enter");
  await expect(form.getByRole("list", { name: "Actions to use" })).toContainText("demo.notification.v1.NotificationService/SendPush");
  await form.getByRole("button", { name: "Generate" }).click();
  await expect(error).toHaveCount(0);
  await expect(first.getByTestId("steps")).toContainText("NotificationService/SendPush");
  expect(errors).toEqual([]);
});

test("a viewer key sees suggestions and candidates but Accept and Register disabled, with the reason", async ({ page }) => {
  const errors = watchConsole(page);
  const { secured, adminKey, viewerKey } = servers();
  const as = { server: secured, key: adminKey };
  // Two patterns of the tenant run one after the other with the user id flowing: a composite.
  const signup = unique("assist_signup");
  const greet = unique("assist_greet");
  await api(
    "RegisterPattern",
    {
      pattern: {
        name: signup,
        version: "1.0.0",
        visibility: "tenant",
        input: { type: "object", properties: { email: { type: "string" } }, required: ["email"] },
        steps: [{ id: "user", call: "demo.user.v1.UserService/CreateUser", with: { email: "${{ input.email }}", display_name: "Vi" } }],
        output: { user_id: "${{ steps.user.user.id }}" },
      },
    },
    as,
  );
  await api(
    "RegisterPattern",
    {
      pattern: {
        name: greet,
        version: "1.0.0",
        visibility: "tenant",
        input: { type: "object", properties: { user_id: { type: "string" } }, required: ["user_id"] },
        steps: [{ id: "push", call: "demo.notification.v1.NotificationService/SendPush", with: { user_id: "${{ input.user_id }}", title: "Hi", body: "b" } }],
        output: { message_id: "${{ steps.push.message_id }}" },
      },
    },
    as,
  );
  for (let i = 0; i < 3; i++) {
    const r = await api<{ output: { user_id: string } }>("ExecutePattern", { pattern_name: signup, input: { email: `v${i}@example.com` } }, as);
    await api("ExecutePattern", { pattern_name: greet, input: { user_id: r.output.user_id } }, as);
  }
  const held = await composite({ server: secured, key: viewerKey, patternName: signup });

  await signIn(page, viewerKey, `#/assist?pattern=${signup}`);
  const c = card(page, held.id);
  await expect(c.getByRole("heading", { name: `Run ${signup} then ${greet} as one pattern` })).toBeVisible();
  const accept = c.getByRole("button", { name: "Accept" });
  await expect(accept).toBeDisabled();
  const reason = "Your key (viewer) may not register patterns: registering needs the author or admin role.";
  await expect(c.getByText(reason)).toBeVisible();
  await expect(accept).toHaveAccessibleDescription(reason);
  await expect(c.getByRole("button", { name: "Open in composer" })).toBeEnabled();
  await expectAccessible(page);

  // Thresholds no suggestion meets: the empty state says where suggestions come from.
  await page.getByLabel("Min. support").fill("100000");
  await expect(page.getByTestId("suggestions-empty")).toContainText("Suggestions come from real executions of your tenant");

  await page.getByRole("tab", { name: "Generate" }).click();
  const form = page.getByRole("form", { name: "Goal" });
  await form.getByLabel("What should the pattern do?").fill("create a user and send them a welcome email");
  await form.getByRole("button", { name: "Generate" }).click();
  const first = page.getByTestId("candidate-1");
  await expect(first.getByTestId("steps")).toContainText("UserService/CreateUser");
  await expect(first.getByRole("button", { name: "Register" })).toBeDisabled();
  await expect(first.getByText(reason)).toBeVisible();
  await expectAccessible(page);
  await screenshot(page, "assist-viewer");

  // The server agrees: the viewer may not register the composite.
  const res = await fetch(`${secured}/nexus.v1.NexusService/RegisterPattern`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${viewerKey}` },
    body: JSON.stringify({ pattern: held.pattern }),
  });
  expect(res.status).toBe(403);
  expect(errors).toEqual([]);
});

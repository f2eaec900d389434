// The composer, driven like a user: drag actions from the palette, connect fields with the mouse,
// read the live diagnostics on the node and on the field, edit YAML, undo / redo, keyboard only,
// register, run. What the server then holds is checked through the API.
import type { Locator, Page } from "@playwright/test";
import { expect, expectAccessible, open, screenshot, servers, signIn, test, unique } from "./fixtures";

// ---------------------------------------------------------------------------------------------
// Helpers.

async function api<T = Record<string, unknown>>(method: string, body: unknown, server: "nexus" | "secured" = "nexus", key?: string): Promise<{ status: number; json: T }> {
  const res = await fetch(`${servers()[server]}/nexus.v1.NexusService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as T };
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

const canvas = (page: Page) => page.getByTestId("canvas");

/** Opens a composer route and waits until it is loaded, laid out and measured. */
async function openComposer(page: Page, hash: string): Promise<void> {
  await open(page, hash);
  await expect(page.locator('[data-testid="canvas"][data-ready="true"]')).toBeVisible({ timeout: 15_000 });
}
const node = (page: Page, stepId: string) => page.locator(`.react-flow__node[data-id="step:${stepId}"]`);
const ioNode = (page: Page, which: "input" | "output") => page.locator(`.react-flow__node[data-id="$${which}"]`);
const handle = (n: Locator, id: string) => n.locator(`.react-flow__handle[data-handleid="${id}"]`);
const paletteAction = (page: Page, method: string) => page.locator(`.palette button.action[data-action$="/${method}"]`);

/** Drags an action from the palette onto the canvas at (x, y) of the canvas (HTML5 drag and drop). */
async function dragAction(page: Page, method: string, x: number, y: number): Promise<void> {
  await paletteAction(page, method).dragTo(canvas(page), { targetPosition: { x, y } });
}

/** Presses the mouse on one handle and releases it on another. */
async function wire(page: Page, from: Locator, to: Locator): Promise<void> {
  await from.scrollIntoViewIfNeeded();
  const a = await from.boundingBox();
  const b = await to.boundingBox();
  if (!a || !b) throw new Error("handle not visible");
  await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
  await page.mouse.down();
  await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 4 });
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 6 });
  await page.mouse.up();
}

async function renameSelected(page: Page, id: string): Promise<void> {
  const input = page.getByRole("form", { name: /^Step / }).getByLabel("Step id");
  await input.fill(id);
  await input.press("Enter");
  await expect(node(page, id)).toBeVisible();
}

async function setPatternName(page: Page, name: string): Promise<void> {
  await page.keyboard.press("Escape");
  const form = page.getByRole("form", { name: "Pattern" });
  await form.getByLabel("name", { exact: true }).fill(name);
}

async function yamlText(page: Page): Promise<string> {
  return page.getByRole("textbox", { name: "YAML" }).inputValue();
}

/** The document the YAML pane holds (the annotation line is a comment). */
async function currentDoc(page: Page): Promise<Record<string, unknown>> {
  const text = await yamlText(page);
  const { parse } = await import("yaml");
  return parse(text) as Record<string, unknown>;
}

async function getPattern(name: string, version = "", server: "nexus" | "secured" = "nexus", key?: string) {
  return api<Record<string, unknown>>("GetPattern", { name, version }, server, key);
}

/** Runs a registered pattern: through the run page when it is there, else through the API. */
async function runPattern(page: Page, name: string, version: string, input: Record<string, unknown>): Promise<void> {
  await page.getByRole("link", { name: `Run ${name}` }).click();
  await expect(page).toHaveURL(new RegExp(`#/run/${name}\\?version=${version.replace(/\./g, "\\.")}`));
  const form = page.getByRole("form", { name: "Execution input" });
  const hasForm = await form.waitFor({ timeout: 5000 }).then(
    () => true,
    () => false,
  );
  if (hasForm) {
    for (const [k, v] of Object.entries(input)) await form.getByLabel(k, { exact: false }).first().fill(String(v));
    await form.locator('button[type="submit"]').click();
    // The live timeline: the execution and every step finish.
    await expect(page.getByRole("heading", { name: /^Execution / })).toBeVisible({ timeout: 15_000 });
    await expect(page.getByRole("definition").filter({ hasText: /^SUCCEEDED$/ })).toBeVisible({ timeout: 15_000 });
    await expect(page.getByRole("row").filter({ hasText: "FAILED" })).toHaveCount(0);
  } else {
    const res = await api<{ status: string; output: Record<string, unknown> }>("ExecutePattern", { pattern_name: name, version, input });
    expect(res.status).toBe(200);
    expect(res.json.status).toBe("EXECUTION_STATUS_SUCCEEDED");
  }
}

// ---------------------------------------------------------------------------------------------

test("composes user_creation from an empty canvas by drag and connect, registers it and runs it", async ({ page }) => {
  test.setTimeout(60_000);
  const errors = watchConsole(page);
  const name = unique("user_creation");
  await openComposer(page, "#/composer");
  await expect(page.getByTestId("step-count")).toHaveText("0 steps");
  await page.getByRole("button", { name: "YAML", exact: true }).click(); // more room for the canvas
  await setPatternName(page, name);

  await dragAction(page, "CreateUser", 300, 40);
  await expect(node(page, "create_user")).toBeVisible();
  await renameSelected(page, "user");
  await dragAction(page, "UploadAsset", 640, 10);
  await renameSelected(page, "avatar");
  await dragAction(page, "SendEmail", 640, 330);
  await renameSelected(page, "welcome");
  await expect(page.getByTestId("step-count")).toHaveText("3 steps");
  await page.keyboard.press("Escape");
  await page.getByRole("button", { name: "Auto layout" }).click();

  const input = ioNode(page, "input");
  const output = ioNode(page, "output");
  const user = node(page, "user");
  const avatar = node(page, "avatar");
  const welcome = node(page, "welcome");
  // New pattern inputs, made by dragging from "+ new input" onto the fields they feed.
  await wire(page, handle(input, "o:$new"), handle(user, "i:with.email"));
  await expect(handle(input, "o:email")).toBeVisible();
  await wire(page, handle(input, "o:$new"), handle(user, "i:with.display_name"));
  await wire(page, handle(input, "o:$new"), handle(avatar, "i:with.source_url"));
  await wire(page, handle(input, "o:email"), handle(welcome, "i:with.to"));
  // Step outputs into step inputs.
  await wire(page, handle(user, "o:user.id"), handle(avatar, "i:with.owner_id"));
  await wire(page, handle(user, "o:user.display_name"), handle(welcome, "i:with.subject"));
  // The output mapping.
  await wire(page, handle(user, "o:user.id"), handle(output, "i:$new"));
  await wire(page, handle(avatar, "o:asset.url"), handle(output, "i:$new"));
  await wire(page, handle(welcome, "o:message_id"), handle(output, "i:$new"));

  await expect(page.locator(".react-flow__edge")).toHaveCount(9);
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");
  await expect(avatar.locator('[data-field="with.owner_id"] .val')).toHaveText("${{ steps.user.user.id }}");
  await page.getByRole("button", { name: "Auto layout" }).click();
  await page.waitForTimeout(300); // the view's animation
  await screenshot(page, "composer-composed");

  await page.getByRole("button", { name: "Register…" }).click();
  const reg = page.getByRole("region", { name: "Register" });
  await reg.getByRole("button", { name: "Register version 1.0.0" }).click();
  await expect(reg.getByRole("status")).toContainText(`Registered ${name}@1.0.0`);

  const stored = await getPattern(name);
  expect(stored.status).toBe(200);
  const steps = stored.json.steps as { id: string; call: string; with: Record<string, string> }[];
  expect(steps.map((s) => [s.id, s.call])).toEqual([
    ["user", "demo.user.v1.UserService/CreateUser"],
    ["avatar", "demo.asset.v1.AssetService/UploadAsset"],
    ["welcome", "demo.notification.v1.NotificationService/SendEmail"],
  ]);
  expect(steps[0].with).toEqual({ email: "${{ input.email }}", display_name: "${{ input.display_name }}" });
  expect(steps[1].with).toEqual({ source_url: "${{ input.source_url }}", owner_id: "${{ steps.user.user.id }}" });
  expect(steps[2].with).toEqual({ to: "${{ input.email }}", subject: "${{ steps.user.user.display_name }}" });
  expect(stored.json.output).toEqual({
    user_id: "${{ steps.user.user.id }}",
    asset_url: "${{ steps.avatar.asset.url }}",
    message_id: "${{ steps.welcome.message_id }}",
  });
  expect(Object.keys((stored.json.input as { properties: object }).properties).sort()).toEqual(["display_name", "email", "source_url"]);

  await runPattern(page, name, "1.0.0", { email: `${unique("grace")}@example.com`, display_name: "Grace", source_url: "https://example.com/g.png" });
  expect(errors).toEqual([]);
});

test("a string output wired to an int32 input shows the type error on that field; fixing it clears it", async ({ page }) => {
  const errors = watchConsole(page);
  const name = unique("broadcast_for_user");
  await openComposer(page, "#/composer");
  await page.getByRole("button", { name: "YAML", exact: true }).click();
  await setPatternName(page, name);
  await dragAction(page, "CreateUser", 260, 60);
  await dragAction(page, "CreateBroadcast", 640, 60);
  const user = node(page, "create_user");
  const broadcast = node(page, "create_broadcast");
  await expect(broadcast).toBeVisible();
  await wire(page, handle(ioNode(page, "input"), "o:$new"), handle(user, "i:with.email"));
  await wire(page, handle(user, "o:user.id"), handle(broadcast, "i:with.owner_id"));
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");

  // A string (user.email) into an int32 (chunk_count): the error lands on that field, on the node…
  await wire(page, handle(user, "o:user.email"), handle(broadcast, "i:with.chunk_count"));
  const row = broadcast.locator('[data-field="with.chunk_count"]');
  await expect(row).toHaveClass(/invalid/);
  await expect(row).toContainText("field `chunk_count` expects an integer (int32), got string (from `steps.create_user.user.email`)");
  await expect(broadcast.locator("header .count")).toHaveText("1 error");
  await expect(page.getByTestId("validation-status")).toHaveText("1 error");
  // …in the problems list (which selects the node)…
  const problems = page.getByRole("region", { name: "Diagnostics" });
  await problems.getByRole("button", { name: "steps[1].with.chunk_count" }).click();
  // …and on the field of the side panel.
  const form = page.getByRole("form", { name: "Step create_broadcast" });
  const field = form.getByRole("textbox", { name: /^chunk_count int32/ });
  await expect(field).toHaveAttribute("aria-invalid", "true");
  await expect(field).toHaveAccessibleDescription(/expects an integer \(int32\), got string/);
  await expect(page.locator(".react-flow__edge.invalid")).toHaveCount(1);
  await screenshot(page, "composer-type-error");

  // Remove the wrong connection (select it with the keyboard, Delete): the field goes with it.
  const wrong = page.locator(".react-flow__edge.invalid");
  await wrong.focus();
  await page.keyboard.press("Enter");
  await expect(page.getByRole("region", { name: "Connection" })).toContainText("with.chunk_count reads steps.create_user.user.email");
  await page.keyboard.press("Delete");
  await expect(page.locator(".react-flow__edge")).toHaveCount(2);
  await expect(row).not.toHaveClass(/invalid/);
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");
  // Wire it again (the whole graph in view: F), then fix it with a literal number instead.
  await page.keyboard.press("f");
  await page.waitForTimeout(300);
  await wire(page, handle(user, "o:user.email"), handle(broadcast, "i:with.chunk_count"));
  await expect(row).toHaveClass(/invalid/);
  await node(page, "create_broadcast").locator("header").click();
  await form.getByRole("button", { name: "chunk_count: expression" }).click();
  await form.getByRole("spinbutton", { name: /^chunk_count int32/ }).fill("3");
  await expect(row).not.toHaveClass(/invalid/);
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");
  await expect(form.getByRole("spinbutton", { name: /^chunk_count int32/ })).not.toHaveAttribute("aria-invalid", "true");
  await expect(page.locator(".react-flow__edge.invalid")).toHaveCount(0);
  await expect(problems).toContainText("No problems");

  // Register and run it.
  await page.getByRole("button", { name: "Register…" }).click();
  await page.getByRole("region", { name: "Register" }).getByRole("button", { name: /^Register version/ }).click();
  await expect(page.getByRole("region", { name: "Register" }).getByRole("status")).toContainText(`Registered ${name}@1.0.0`);
  const stored = await getPattern(name);
  expect((stored.json.steps as { with: object }[])[1].with).toEqual({ owner_id: "${{ steps.create_user.user.id }}", chunk_count: 3 });
  await runPattern(page, name, "1.0.0", { email: `${unique("ada")}@example.com` });
  expect(errors).toEqual([]);
});

test("undo and redo walk back and forth through ten edits, each state restored exactly", async ({ page }) => {
  test.setTimeout(60_000);
  await openComposer(page, "#/composer");
  const states: string[] = [];
  const snap = async () => {
    // Let the YAML view catch up with the last edit, then remember it.
    await page.waitForTimeout(350);
    states.push(await yamlText(page));
  };
  await snap(); // 0: the empty canvas
  await setPatternName(page, unique("undo")); // 1
  await snap();
  await dragAction(page, "CreateUser", 200, 80); // 2
  await snap();
  await renameSelected(page, "user"); // 3
  await snap();
  await paletteAction(page, "SendEmail").focus();
  await page.keyboard.press("Enter"); // 4
  await expect(node(page, "send_email")).toBeVisible();
  await snap();
  await page.getByRole("button", { name: "Auto layout" }).click(); // 5
  await snap();
  await wire(page, handle(node(page, "user"), "o:user.email"), handle(node(page, "send_email"), "i:with.to")); // 6
  await expect(page.locator(".react-flow__edge")).toHaveCount(1);
  await snap();
  const form = page.getByRole("form", { name: "Step send_email" });
  await node(page, "send_email").locator("header").click();
  await form.getByRole("textbox", { name: /^subject/ }).fill("Welcome"); // 7
  await snap();
  await form.getByText("Reliability: retry, timeout, compensate").click();
  await form.getByRole("textbox", { name: /^timeout/ }).fill("2s"); // 8
  await snap();
  await node(page, "user").locator("header").click();
  await page.keyboard.press("ArrowDown"); // 9: the node moves (positions are edits too)
  await snap();
  await page.keyboard.press("Delete"); // 10: the step goes
  await expect(node(page, "user")).toHaveCount(0);
  await snap();
  expect(new Set(states).size).toBe(11);

  await page.getByTestId("canvas").click({ position: { x: 5, y: 5 } });
  for (let i = 9; i >= 0; i--) {
    await page.keyboard.press("Control+z");
    await expect.poll(() => yamlText(page)).toBe(states[i]);
  }
  await expect(page.getByRole("button", { name: "Undo", exact: true })).toBeDisabled();
  for (let i = 1; i <= 10; i++) {
    await page.keyboard.press(i % 2 ? "Control+Shift+z" : "Control+y");
    await expect.poll(() => yamlText(page)).toBe(states[i]);
  }
  await expect(page.getByRole("button", { name: "Redo", exact: true })).toBeDisabled();
  // The buttons do the same.
  await page.getByRole("button", { name: "Undo", exact: true }).click();
  await expect.poll(() => yamlText(page)).toBe(states[9]);
  await expect(node(page, "user")).toBeVisible();
  await page.getByRole("button", { name: "Redo", exact: true }).click();
  await expect.poll(() => yamlText(page)).toBe(states[10]);
});

const TWO_STEPS = `# A comment of mine.
name: yaml_first
version: 2.0.0
input:
  type: object
  properties:
    email: {type: string}
steps:
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with:
      email: "\${{ input.email }}"
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    with:
      to: "\${{ steps.user.user.email }}"
      subject: Hello
output:
  sent: "\${{ steps.mail.accepted }}"
`;

test("YAML edits update the canvas, canvas edits update the YAML, and a parse error never loses the text", async ({ page }) => {
  const errors = watchConsole(page);
  await openComposer(page, "#/composer");
  const yaml = page.getByRole("textbox", { name: "YAML" });
  // YAML → canvas.
  await yaml.fill(TWO_STEPS);
  await expect(node(page, "user")).toBeVisible();
  await expect(node(page, "mail")).toBeVisible();
  await expect(page.getByTestId("step-count")).toHaveText("2 steps");
  await expect(page.getByTestId("pattern-title")).toHaveText("yaml_first");
  await expect(page.locator('.react-flow__edge[data-id^="data|step:user|user.email|step:mail|with.to"]')).toHaveCount(1);
  await expect(page.locator(".react-flow__edge")).toHaveCount(3);
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");
  // The text stays as typed (comments included) while it is the user's.
  await expect(yaml).toHaveValue(TWO_STEPS);

  // A parse error: shown with its line, the text kept, the canvas unchanged.
  const broken = TWO_STEPS.replace("  - id: mail\n", "  - id: mail\n   oops: [\n");
  await yaml.fill(broken);
  const alert = page.getByRole("region", { name: "YAML" }).getByRole("alert");
  await expect(alert).toContainText(/^Line 1[45]/);
  await expect(yaml).toHaveValue(broken);
  await expect(page.getByTestId("step-count")).toHaveText("2 steps");
  // A canvas edit meanwhile does not overwrite the broken text.
  await dragAction(page, "SendPush", 200, 380);
  await expect(page.getByTestId("step-count")).toHaveText("3 steps");
  await expect(yaml).toHaveValue(broken);
  await expect(page.getByRole("region", { name: "YAML" }).getByRole("status")).toContainText("your text is kept");
  await page.getByRole("button", { name: "Replace it with the canvas's YAML" }).click();
  await expect(alert).toHaveCount(0);

  // Canvas → YAML: the new step, then a rename that follows into the references.
  await expect(yaml).toHaveValue(/- id: send_push\n\s+call: demo.notification.v1.NotificationService\/SendPush/);
  await expect(yaml).toHaveValue(/^# A comment of mine.\n# nexus-ui: \{"layout":/);
  await node(page, "user").locator("header").click();
  await renameSelected(page, "account");
  await expect(yaml).toHaveValue(/to: \$\{\{ steps\.account\.user\.email \}\}/);
  await expect(page.locator('.react-flow__edge[data-id^="data|step:account|user.email|step:mail|with.to"]')).toHaveCount(1);

  // Round trip: the document the YAML holds is the one typed, plus the canvas's edits only.
  const doc = await currentDoc(page);
  expect(Object.keys(doc)).toEqual(["name", "version", "input", "steps", "output"]);
  expect((doc.steps as { id: string }[]).map((s) => s.id)).toEqual(["account", "mail", "send_push"]);
  // Undo the rename and the added step: the typed document exactly.
  await page.getByTestId("canvas").click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("Control+z");
  await page.keyboard.press("Control+z");
  const { parse } = await import("yaml");
  await expect.poll(async () => JSON.stringify(await currentDoc(page))).toBe(JSON.stringify(parse(TWO_STEPS)));
  expect(errors).toEqual([]);
});

/** Presses Tab until the focused element matches, at most `max` times. */
async function tabTo(page: Page, matches: (el: Element) => boolean, max = 60, back = false): Promise<void> {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
    const ok = await page.evaluate((src) => {
      const fn = new Function("el", `return (${src})(el)`) as (el: Element) => boolean;
      return document.activeElement ? fn(document.activeElement) : false;
    }, matches.toString());
    if (ok) return;
  }
  throw new Error("focus never got there");
}

test("keyboard only: add a step, edit it, delete it", async ({ page }) => {
  await openComposer(page, "#/composer");
  await page.locator("body").press("/");
  await expect(page.getByRole("searchbox", { name: "Search actions" })).toBeFocused();
  await page.keyboard.type("SendPush");
  await expect(page.locator(".palette button.action")).toHaveCount(1);
  await page.keyboard.press("Tab");
  await expect(paletteAction(page, "SendPush")).toBeFocused();
  await page.keyboard.press("Enter");
  // The new step is selected and its id field focused.
  const idField = page.getByRole("form", { name: "Step send_push" }).getByLabel("Step id");
  await expect(idField).toBeFocused();
  await page.keyboard.type("notify");
  await page.keyboard.press("Enter");
  await expect(node(page, "notify")).toBeVisible();
  const form = page.getByRole("form", { name: "Step notify" });
  await tabTo(page, (el) => ((el as HTMLInputElement).labels?.[0]?.textContent ?? "").startsWith("title"));
  await page.keyboard.type("Hi there");
  await expect(node(page, "notify").locator('[data-field="with.title"] .val')).toHaveText("Hi there");
  await expect(form.getByRole("textbox", { name: /^title/ })).toHaveValue("Hi there");
  // Tab to the node on the canvas, select it with Enter, delete it with Delete.
  await tabTo(page, (el) => el.getAttribute("data-id") === "step:notify", 80);
  await page.keyboard.press("Enter");
  await expect(node(page, "notify")).toHaveClass(/selected/);
  await page.keyboard.press("Delete");
  await expect(node(page, "notify")).toHaveCount(0);
  await expect(page.getByTestId("step-count")).toHaveText("0 steps");
  // The shortcuts are listed in the help ("?").
  await page.keyboard.press("?");
  const help = page.getByRole("region", { name: "Keyboard shortcuts" });
  await expect(help).toContainText("Delete the selected step or connection");
  await expect(help).toContainText("Ctrl/⌘ + Z");
  await page.keyboard.press("Control+z");
  await expect(node(page, "notify")).toBeVisible();
});

test("opening a registered pattern shows its steps, edges and fields; accessible", async ({ page }) => {
  const errors = watchConsole(page);
  await openComposer(page, "#/composer/user_creation?version=1.0.0");
  for (const id of ["user", "avatar", "welcome", "announce"]) await expect(node(page, id)).toBeVisible();
  await expect(page.getByTestId("step-count")).toHaveText("4 steps");
  await expect(page.locator(".react-flow__edge")).toHaveCount(16);
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");
  await expect(node(page, "avatar").locator("header .sid")).toHaveText("avatar");
  await expect(node(page, "avatar")).toContainText("UploadAsset");
  await expect(node(page, "avatar").locator('[data-field="with.owner_id"] .val')).toHaveText("${{ steps.user.user.id }}");
  await expect(node(page, "announce")).toContainText("emit user.created");
  await expect(ioNode(page, "output")).toContainText("email_id");
  // The server's fields stay out of the document.
  const doc = await currentDoc(page);
  expect(Object.keys(doc)).not.toContain("registered_at");
  expect(Object.keys(doc)).not.toContain("tenant");
  // Selecting a step opens its form.
  await node(page, "user").locator("header").click();
  const form = page.getByRole("form", { name: "Step user" });
  await expect(form.getByRole("textbox", { name: /^email/ })).toHaveValue("${{ input.email }}");
  await expect(form.getByRole("spinbutton", { name: "max_attempts" })).toHaveValue("3");
  await expectAccessible(page);
  await screenshot(page, "composer");
  expect(errors).toEqual([]);
  // A pattern that does not exist: the server's answer, verbatim.
  await open(page, "#/composer/no_such_pattern_here");
  await expect(page.getByRole("alert")).toContainText("Cannot open no_such_pattern_here: NOT_FOUND");
});

test("a viewer key cannot register (the button says why); an admin key can", async ({ page }) => {
  await signIn(page, servers().viewerKey, "#/composer");
  await expect(canvas(page)).toHaveAttribute("data-ready", "true");
  const register = page.getByRole("button", { name: "Register…" });
  await expect(register).toBeDisabled();
  await expect(register).toHaveAttribute("title", /needs the author or admin role/);

  const name = unique("admin_made");
  await signIn(page, servers().adminKey, "#/composer");
  await expect(canvas(page)).toHaveAttribute("data-ready", "true");
  await setPatternName(page, name);
  await dragAction(page, "SendEmail", 300, 100);
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");
  await expect(register).toBeEnabled();
  await register.click();
  await page.getByRole("region", { name: "Register" }).getByRole("button", { name: "Register version 1.0.0" }).click();
  await expect(page.getByRole("region", { name: "Register" }).getByRole("status")).toContainText(`Registered ${name}@1.0.0`);
  const stored = await getPattern(name, "", "secured", servers().adminKey);
  expect(stored.status).toBe(200);
  expect(stored.json.tenant).toBe("acme");
});

test("register suggests the next patch version and shows the server's refusal verbatim", async ({ page }) => {
  const name = unique("versions");
  const doc = { name, version: "1.2.3", steps: [{ id: "mail", call: "demo.notification.v1.NotificationService/SendEmail", with: { to: "a@b.c" } }] };
  expect((await api("RegisterPattern", { pattern: doc })).status).toBe(200);
  await openComposer(page, `#/composer/${name}`);
  await expect(node(page, "mail")).toBeVisible();
  await page.getByRole("button", { name: "Register…" }).click();
  const reg = page.getByRole("region", { name: "Register" });
  await expect(reg).toContainText("Registered versions: 1.2.3");
  await expect(reg.getByLabel("Version")).toHaveValue("1.2.4");

  // A document the server refuses: its message and every diagnostic, as sent.
  await node(page, "mail").locator("header").click();
  await page.getByRole("form", { name: "Step mail" }).getByRole("combobox", { name: /^Action/ }).fill("demo.notification.v1.NotificationService/SendFax");
  await expect(node(page, "mail").locator("header .count")).toHaveText("1 error");
  await reg.getByRole("button", { name: "Register version 1.2.4" }).click();
  const alert = reg.getByRole("alert");
  await expect(alert).toContainText("INVALID_ARGUMENT");
  await expect(alert).toContainText("steps[0].call");
  await expect(alert).toContainText("SendFax");
  expect((await getPattern(name, "1.2.4")).status).not.toBe(200);

  // Fixed: registered as 1.2.4; the links lead to running it and to the marketplace.
  await page.getByRole("form", { name: "Step mail" }).getByRole("combobox", { name: /^Action/ }).fill("demo.notification.v1.NotificationService/SendEmail");
  await expect(page.getByTestId("validation-status")).toHaveText("Valid");
  await reg.getByRole("button", { name: "Register version 1.2.4" }).click();
  await expect(reg.getByRole("status")).toContainText(`Registered ${name}@1.2.4`);
  await expect(reg.getByRole("link", { name: `Run ${name}` })).toHaveAttribute("href", `#/run/${name}?version=1.2.4`);
  await expect(reg.getByRole("link", { name: "Open in marketplace" })).toHaveAttribute("href", `#/marketplace/${name}`);
  expect((await getPattern(name)).json.version).toBe("1.2.4");
});

test("automatic layout arranges the nodes along the data flow without overlaps; undo restores the drag", async ({ page }) => {
  await openComposer(page, "#/composer/user_creation?version=1.0.0");
  await expect(node(page, "welcome")).toBeVisible();
  const box = async (l: Locator) => (await l.boundingBox())!;
  // Drag a node with the mouse onto another one.
  const from = await box(node(page, "welcome").locator("header"));
  const onto = await box(node(page, "user"));
  await page.mouse.move(from.x + 20, from.y + 5);
  await page.mouse.down();
  await page.mouse.move(onto.x + 30, onto.y + 10, { steps: 10 });
  await page.mouse.up();
  const dragged = await box(node(page, "welcome"));
  expect(Math.abs(dragged.x - onto.x)).toBeLessThan(40);

  await page.getByRole("button", { name: "Auto layout" }).click();
  await page.waitForTimeout(400); // the fit-view animation
  const ids = ["user", "avatar", "welcome", "announce"];
  const boxes = await Promise.all(ids.map((id) => box(node(page, id))));
  const inBox = await box(ioNode(page, "input"));
  const outBox = await box(ioNode(page, "output"));
  // Left to right: input, then user, then what reads user, then output.
  for (const b of boxes) expect(b.x).toBeGreaterThan(inBox.x);
  for (const b of boxes.slice(1)) expect(b.x).toBeGreaterThan(boxes[0].x + boxes[0].width / 2);
  for (const b of boxes) expect(outBox.x).toBeGreaterThan(b.x);
  const all = [inBox, outBox, ...boxes];
  for (let i = 0; i < all.length; i++)
    for (let j = i + 1; j < all.length; j++) {
      const [a, b] = [all[i], all[j]];
      const overlap = a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
      expect(overlap, `nodes ${i} and ${j} overlap`).toBe(false);
    }
  await screenshot(page, "composer-layout");
  // Undo the layout, then the drag.
  await page.getByRole("button", { name: "Undo", exact: true }).click();
  await page.getByRole("button", { name: "Undo", exact: true }).click();
  await expect(page.getByRole("button", { name: "Undo", exact: true })).toBeDisabled();
});

test("the catalog's link #/composer?add=ACTION starts a canvas with that action placed and selected", async ({ page }) => {
  await openComposer(page, `#/composer?add=${encodeURIComponent("demo.broadcast.v1.BroadcastService/Subscribe")}`);
  await expect(node(page, "subscribe")).toBeVisible();
  await expect(node(page, "subscribe")).toContainText("Subscribe");
  const form = page.getByRole("form", { name: "Step subscribe" });
  await expect(form.getByRole("combobox", { name: /^Action/ })).toHaveValue("demo.broadcast.v1.BroadcastService/Subscribe");
  // A server-streaming action offers `stream`, and its int32 field takes a number.
  await form.getByLabel("stream").check();
  await form.getByRole("spinbutton", { name: /^max_chunks int32/ }).fill("2");
  await expect(page.getByRole("textbox", { name: "YAML" })).toHaveValue(/stream: true/);
  await expect(page.getByRole("textbox", { name: "YAML" })).toHaveValue(/max_chunks: 2\n/);
  await expectAccessible(page);
  await screenshot(page, "composer-step-form");
});

test("a registered pattern is a step too: dropped from the palette as a sub-pattern call with its input and output fields", async ({ page }) => {
  await openComposer(page, "#/composer");
  const sub = page.locator('.palette button.action[data-action="pattern:user_creation@1.0.0"]');
  await expect(sub).toHaveAccessibleName("Add sub-pattern user_creation");
  await sub.dragTo(canvas(page), { targetPosition: { x: 300, y: 200 } });
  const n = node(page, "user_creation");
  await expect(n).toBeVisible();
  // Its inputs are the pattern's input schema, its outputs the keys of its output mapping.
  for (const field of ["email", "name", "avatar_url", "user_id", "email_id"]) {
    await expect(n).toContainText(field);
  }
  await expect(page.getByRole("textbox", { name: "YAML" })).toHaveValue(/call: pattern:user_creation@1\.0\.0/);
  // Filled from the step form, it type-checks against the callee's input: no problem left.
  const form = page.getByRole("form", { name: "Step user_creation" });
  await form.getByRole("textbox", { name: /^email/ }).first().fill("ada@example.com");
  await form.getByRole("textbox", { name: /^name/ }).first().fill("Ada");
  // The one problem left is the pattern's own missing name: the call and its `with` type-check.
  const diagnostics = page.getByRole("region", { name: "Diagnostics" });
  await expect(diagnostics.getByRole("listitem")).toHaveCount(1);
  await expect(diagnostics.getByRole("listitem")).toContainText("a pattern needs a name");
  await expect(page.getByRole("textbox", { name: "YAML" })).toHaveValue(/email: ada@example\.com/);
});

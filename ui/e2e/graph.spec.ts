// The knowledge graph page: impact, lineage and neighbourhood queries, drawn and listed.
import { expect, expectAccessible, open, screenshot, servers, test, unique } from "./fixtures";

type Json = Record<string, unknown>;

async function api(method: string, body: Json): Promise<Json> {
  const r = await fetch(`${servers().nexus}/nexus.v1.NexusService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = (await r.json()) as Json;
  if (!r.ok) throw new Error(`${method}: HTTP ${r.status} ${JSON.stringify(json)}`);
  return json;
}

function mailPattern(name: string, version: string, subject: string): Json {
  return {
    name,
    version,
    visibility: "tenant",
    steps: [
      { id: "mail", call: "demo.notification.v1.NotificationService/SendEmail", with: { to: "a@example.com", subject, body: "b" } },
    ],
  };
}

test("impact of CreateUser shows user_creation, drawn and listed; clicking the pattern opens the marketplace", async ({ page }) => {
  await open(page, "#/graph");
  await expect(page.getByRole("link", { name: /What breaks if/ })).toBeVisible();
  await page.getByRole("radio", { name: "Impact" }).check();
  await page.getByLabel("Action or event type").fill("demo.user.v1.UserService/CreateUser");
  await page.getByRole("button", { name: "Show" }).click();
  await expect(page).toHaveURL(/#\/graph\?impact=demo\.user\.v1\.UserService%2FCreateUser$/);
  const canvas = page.getByRole("region", { name: /Graph drawing/ });
  const node = canvas.locator(".react-flow__node").filter({ hasText: "user_creation@1.0.0" });
  await expect(node).toBeVisible();
  await expect(canvas.locator(".react-flow__node").filter({ hasText: "demo.user.v1.UserService/CreateUser" })).toBeVisible();
  await expect(canvas.locator(".react-flow__edge-text").filter({ hasText: "USES" }).first()).toBeVisible();
  // The same answer as a table, matching what the server says.
  const answer = await api("QueryGraph", { impact: "demo.user.v1.UserService/CreateUser" });
  const nodes = page.getByRole("table", { name: /^Nodes/ });
  await expect(nodes.locator("tbody tr")).toHaveCount((answer.nodes as Json[]).length);
  await expect(nodes.getByRole("link", { name: "user_creation@1.0.0" })).toHaveAttribute("href", "#/marketplace/user_creation");
  await expect(page.getByRole("table", { name: /^Edges/ })).toContainText("USES");
  await expectAccessible(page);
  await screenshot(page, "graph");
  await node.click();
  await expect(page).toHaveURL(/#\/marketplace\/user_creation$/);
});

test("lineage of a forked pattern shows the source and the fork, with the deprecated version marked", async ({ page }) => {
  const source = unique("lineage_src");
  const fork = unique("lineage_fork");
  await api("RegisterPattern", { pattern: mailPattern(source, "1.0.0", "one") });
  await api("RegisterPattern", { pattern: mailPattern(source, "1.1.0", "two") });
  await api("ForkPattern", { name: source, version: "1.0.0", new_name: fork });
  await api("DeprecatePattern", { name: source, version: "1.0.0", reason: "superseded" });

  await open(page, `#/graph?lineage=${fork}`);
  await expect(page.getByRole("radio", { name: "Lineage" })).toBeChecked();
  await expect(page.getByLabel("Pattern", { exact: true })).toHaveValue(fork);
  const canvas = page.getByRole("region", { name: /Graph drawing/ });
  await expect(canvas.locator(".react-flow__node")).toHaveCount(3);
  const old = canvas.locator(".react-flow__node").filter({ hasText: `${source}@1.0.0` });
  await expect(old).toContainText("deprecated");
  await expect(old.locator(".gn-deprecated")).toHaveCount(1);
  await expect(canvas.locator(".react-flow__node").filter({ hasText: `${fork}@1.0.0` })).toBeVisible();
  await expect(canvas.locator(".react-flow__edge-text").filter({ hasText: "FORKED_FROM" })).toHaveCount(1);
  const edges = page.getByRole("table", { name: /^Edges/ });
  await expect(edges.locator("tbody tr")).toHaveCount(1);
  await expect(edges.locator("tbody tr")).toContainText(`${fork}@1.0.0FORKED_FROM${source}@1.0.0`);
  await expect(page.getByRole("status").filter({ hasText: "Lineage of" })).toContainText("3 pattern versions");
  await expectAccessible(page);
  // The lineage of the source is the same tree.
  await page.getByLabel("Pattern", { exact: true }).fill(source);
  await page.getByRole("button", { name: "Show" }).click();
  await expect(page).toHaveURL(new RegExp(`#/graph\\?lineage=${source}$`));
  await expect(page.getByRole("table", { name: /^Nodes/ }).getByRole("link", { name: `${fork}@1.0.0` })).toBeVisible();
});

test("neighbourhood by depth, exploring from the table, an event type's impact, and errors shown verbatim", async ({ page }) => {
  await open(page, "#/graph");
  await page.getByRole("radio", { name: "Neighbourhood" }).check();
  await page.getByLabel("Node id").fill("pattern:user_creation@1.0.0");
  await page.getByLabel("Depth").selectOption("1");
  await page.getByRole("button", { name: "Show" }).click();
  const nodes = page.getByRole("table", { name: /^Nodes/ });
  await expect(nodes).toContainText("demo.user.v1.UserService/CreateUser");
  await expect(nodes).not.toContainText("service:demo.user.v1.UserService");
  await page.getByLabel("Depth").selectOption("2");
  await page.getByRole("button", { name: "Show" }).click();
  await expect(page).toHaveURL(/neighbourhood=pattern%3Auser_creation%401\.0\.0&depth=2$/);
  await expect(nodes).toContainText("service:demo.user.v1.UserService");
  await expect(page.getByRole("region", { name: /Graph drawing/ }).locator(".react-flow__node.selectable, .react-flow__node")).not.toHaveCount(0);

  await page.getByRole("button", { name: "Neighbourhood of event:user.created" }).click();
  await expect(page).toHaveURL(/neighbourhood=event%3Auser\.created&depth=1$/);
  await expect(nodes.getByRole("link", { name: "welcome_series@1.0.0" })).toBeVisible();
  await expect(page.getByRole("table", { name: /^Edges/ })).toContainText("TRIGGERED_BY");

  await open(page, "#/graph?impact=user.created");
  await expect(nodes.getByRole("link", { name: "welcome_series@1.0.0" })).toBeVisible();
  await expect(nodes.getByRole("link", { name: "user_creation@1.0.0" })).toBeVisible();
  await expect(page.getByRole("table", { name: /^Edges/ })).toContainText("EMITS");

  const missing = unique("no_such_pattern");
  await open(page, `#/graph?lineage=${missing}`);
  await expect(page.getByRole("alert")).toContainText("NOT_FOUND");
  await expect(page.getByRole("alert")).toContainText(missing);
  await expectAccessible(page);
});

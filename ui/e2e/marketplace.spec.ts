// The marketplace against a real Nexus: search (text, tag, owner, action), sort and paging;
// versions and deprecation; a version diff drawn on the graph; fork and lineage; stars; sharing;
// and what a viewer key does not get to see. Every test registers its own uniquely named patterns
// through the API and checks what the server holds after the UI acted.
import { expect, expectAccessible, open, screenshot, servers, signIn, test, unique } from "./fixtures";
import { api, oneStep, register, userDoc, userDocV2 } from "./market-helpers";

const PUSH = "demo.notification.v1.NotificationService/SendPush";
const CREATE = "demo.user.v1.UserService/CreateUser";

interface Versions {
  latest: string;
  visibility: string;
  stars?: string;
  forked_from?: string;
  versions: { version: string; deprecated?: boolean; deprecation_reason?: string }[];
}

/** The stars the store holds for `name` (ListPatterns reads the store). */
async function storedStars(name: string): Promise<string> {
  const r = await api<{ patterns?: { name: string; stars?: string }[] }>("ListPatterns", { query: name });
  return r.patterns?.find((p) => p.name === name)?.stars ?? "0";
}

const cards = (page: import("@playwright/test").Page) => page.getByRole("list", { name: "Patterns" }).getByRole("listitem").filter({ has: page.getByRole("heading") });
const cardNames = (page: import("@playwright/test").Page) => cards(page).getByRole("heading").allInnerTexts();

test("search by text, tag, owner and action, and sort by name, popularity and recency", async ({ page }) => {
  const tag = unique("mkt_tag");
  const [alpha, beta, gamma] = ["alpha", "beta", "gamma"].map((n) => `${tag}_${n}`);
  await register(oneStep(alpha, CREATE, { tags: [tag, "e2e"], description: "Signs people up." }));
  await new Promise((r) => setTimeout(r, 20));
  await register(oneStep(beta, PUSH, { tags: [tag], description: "Pushes a notification." }));
  await new Promise((r) => setTimeout(r, 20));
  await register(oneStep(gamma, CREATE, { tags: [tag], description: "Another sign-up." }));
  await api("Star", { name: beta });

  await open(page, "#/marketplace");
  await expect(page.getByRole("heading", { name: "Marketplace", level: 1 })).toBeVisible();
  await expect(page.getByTestId("pattern-card-user_creation")).toBeVisible();

  // By tag: ours, in name order (the default sort without text).
  await page.getByLabel("Tag", { exact: true }).fill(tag);
  await expect(cards(page)).toHaveCount(3);
  expect(await cardNames(page)).toEqual([alpha, beta, gamma]);
  await expect(page).toHaveURL(new RegExp(`[?&]tag=${tag}`));

  // By text, within the tag: matched against the description too.
  await page.getByLabel("Search", { exact: true }).fill("sign");
  await expect(cards(page)).toHaveCount(2);
  expect(await cardNames(page)).toEqual([alpha, gamma]);
  await page.getByLabel("Search", { exact: true }).fill("");

  // By action used.
  await page.getByLabel("Calls action").fill(PUSH);
  await expect(cards(page)).toHaveCount(1);
  await expect(page.getByTestId(`pattern-card-${beta}`)).toContainText("Pushes a notification.");
  await page.getByLabel("Calls action").fill("");
  await expect(cards(page)).toHaveCount(3);

  // By owner (the open demo's caller is `local`): a click on the owner filters by it.
  await page.getByTestId(`pattern-card-${alpha}`).getByRole("button", { name: "Patterns by local" }).click();
  await expect(page.getByLabel("Owner", { exact: true })).toHaveValue("local");
  await expect(cards(page)).toHaveCount(3);
  await page.getByLabel("Owner", { exact: true }).fill("somebody_else");
  await expect(page.getByText("No pattern matches these filters.")).toBeVisible();
  await page.getByLabel("Owner", { exact: true }).fill("");
  await expect(cards(page)).toHaveCount(3);

  // Sort: popularity puts the starred one first, recency the last registered.
  await page.getByLabel("Sort").selectOption("popularity");
  await expect(cards(page).first().getByRole("heading")).toHaveText(beta);
  await expect(page.getByTestId(`pattern-card-${beta}`).getByTestId("stars")).toHaveText("★ 1");
  await page.getByLabel("Sort").selectOption("recent");
  await expect(cards(page).first().getByRole("heading")).toHaveText(gamma);
  await page.getByLabel("Sort").selectOption("name");
  await expect(cards(page).first().getByRole("heading")).toHaveText(alpha);
  await expect(page).toHaveURL(/sort=name/);

  // The address holds the search: a reload shows the same.
  await page.reload();
  await expect(page.getByLabel("Tag", { exact: true })).toHaveValue(tag);
  await expect(cards(page)).toHaveCount(3);
  await expectAccessible(page);
  await page.getByLabel("Tag", { exact: true }).fill("");
  await expect(cards(page).nth(3)).toBeVisible();
  await screenshot(page, "marketplace");
});

test("results are paged with the server's page token", async ({ page }) => {
  const tag = unique("mkt_page");
  await Promise.all(Array.from({ length: 23 }, (_, i) => register(oneStep(`${tag}_${String(i).padStart(2, "0")}`, CREATE, { tags: [tag] }))));
  await open(page, `#/marketplace?tag=${tag}&sort=name`);
  await expect(cards(page)).toHaveCount(20);
  await expect(cards(page).first().getByRole("heading")).toHaveText(`${tag}_00`);
  const pages = page.getByRole("navigation", { name: "Pages" });
  await expect(pages.getByRole("button", { name: "← Previous" })).toBeDisabled();
  await pages.getByRole("button", { name: "Next →" }).click();
  await expect(cards(page)).toHaveCount(3);
  expect(await cardNames(page)).toEqual([`${tag}_20`, `${tag}_21`, `${tag}_22`]);
  await expect(pages.getByText("Page 2")).toBeVisible();
  await expect(pages.getByRole("button", { name: "Next →" })).toBeDisabled();
  await pages.getByRole("button", { name: "← Previous" }).click();
  await expect(cards(page)).toHaveCount(20);
});

test("versions: deprecate one with a reason, latest moves to the previous one, and undo", async ({ page }) => {
  const name = unique("mkt_versions");
  await register(userDoc(name, "1.0.0"));
  await register(userDocV2(name, "1.1.0"));
  await open(page, `#/marketplace/${name}`);
  await expect(page.getByRole("heading", { name: new RegExp(`^${name}`), level: 1 })).toBeVisible();
  await expect(page.getByTestId("latest")).toHaveText("1.1.0");
  const v11 = page.getByTestId("version-1.1.0");
  await expect(v11).toContainText("latest");
  await expect(page.getByTestId("version-1.0.0")).toBeVisible();

  await v11.getByRole("button", { name: "Deprecate 1.1.0…" }).click();
  await v11.getByLabel("Reason").fill("sends the push twice");
  await v11.getByRole("button", { name: "Deprecate", exact: true }).click();
  await expect(page.getByText("1.1.0 deprecated; latest is 1.0.0.")).toBeVisible();
  await expect(page.getByTestId("latest")).toHaveText("1.0.0");
  await expect(v11).toContainText("deprecated");
  await expect(v11.getByTestId("deprecation-reason")).toHaveText("sends the push twice");
  await expect(page.getByTestId("version-1.0.0")).toContainText("latest");

  const held = await api<Versions>("ListPatternVersions", { name });
  expect(held.latest).toBe("1.0.0");
  expect(held.versions.find((v) => v.version === "1.1.0")).toMatchObject({ deprecated: true, deprecation_reason: "sends the push twice" });
  await expectAccessible(page);

  await v11.getByRole("button", { name: "Un-deprecate 1.1.0" }).click();
  await expect(page.getByTestId("latest")).toHaveText("1.1.0");
  expect((await api<Versions>("ListPatternVersions", { name })).latest).toBe("1.1.0");
});

test("the diff of two versions is drawn on the graph and listed by path", async ({ page }) => {
  const name = unique("mkt_diff");
  await register(userDoc(name, "1.0.0"));
  await register(userDocV2(name, "2.0.0"));
  await open(page, `#/marketplace/${name}`);
  // The selected (latest) version's graph and document.
  await expect(page.getByTestId("step-node-push")).toBeVisible();
  await expect(page.getByTestId("yaml")).toContainText("subject: Welcome aboard");

  await page.getByLabel("Diff from").selectOption("1.0.0");
  await page.getByLabel("Diff to").selectOption("2.0.0");
  await page.getByRole("button", { name: "Show diff" }).click();
  await expect(page).toHaveURL(/from=1\.0\.0&to=2\.0\.0/);
  const diff = page.getByTestId("diff");
  await expect(diff.getByRole("heading", { name: "Diff 1.0.0 → 2.0.0" })).toBeVisible();
  // On the graph: welcome changed, push added, audit removed, user untouched.
  await expect(diff.getByTestId("step-node-welcome")).toHaveAttribute("data-change", "changed");
  await expect(diff.getByTestId("step-node-push")).toHaveAttribute("data-change", "added");
  await expect(diff.getByTestId("step-node-audit")).toHaveAttribute("data-change", "removed");
  await expect(diff.getByTestId("step-node-user")).toHaveAttribute("data-change", "none");
  await expect(diff.getByTestId("step-node-welcome")).toContainText("changed");
  // The change list, as DiffPatterns returns it.
  const changes = diff.getByTestId("changes");
  const subject = changes.getByRole("row").filter({ hasText: "steps.welcome.with.subject" });
  await expect(subject).toContainText("changed");
  await expect(subject).toContainText('"Welcome"');
  await expect(subject).toContainText('"Welcome aboard"');
  await expect(changes.getByRole("row").filter({ hasText: "steps.push" })).toContainText("added");
  await expect(changes.getByRole("row").filter({ hasText: "steps.audit" })).toContainText("removed");
  await expect(diff.getByRole("status")).toHaveText("3 changes: 1 added, 1 removed, 1 changed.");
  // Clicking a step shows only its changes.
  await diff.getByTestId("step-node-welcome").click();
  await expect(changes.getByRole("row")).toHaveCount(2); // header + the subject change
  await diff.getByRole("button", { name: "Show all changes" }).click();
  await expect(changes.getByRole("row")).toHaveCount(4);
  await expectAccessible(page);
  await diff.evaluate((e) => e.scrollIntoView());
  await screenshot(page, "marketplace-diff");

  // The URL alone opens the same diff.
  await page.goto(`${servers().nexus}/ui/#/marketplace/${name}?from=1.0.0&to=2.0.0`);
  await expect(page.getByTestId("step-node-welcome")).toHaveAttribute("data-change", "changed");
  await page.getByRole("link", { name: "Close diff" }).click();
  await expect(page.getByTestId("diff")).toHaveCount(0);
});

test("fork: the fork opens, says where it comes from, shows its lineage and diffs against its source", async ({ page }) => {
  const source = unique("mkt_src");
  const fork = `${source}_fork`;
  await register(userDoc(source, "1.0.0"));
  await register(userDocV2(source, "1.1.0"));
  await open(page, `#/marketplace/${source}`);
  const forkForm = page.getByRole("region", { name: "Fork" });
  await forkForm.getByLabel("New name").fill(fork);
  await forkForm.getByLabel("Version to fork").selectOption("1.0.0");
  await forkForm.getByRole("button", { name: "Fork" }).click();

  await expect(page).toHaveURL(new RegExp(`#/marketplace/${fork}$`));
  await expect(page.getByRole("heading", { name: new RegExp(`^${fork}`), level: 1 })).toBeVisible();
  await expect(page.getByTestId("forked-from")).toHaveText(`forked from ${source}@1.0.0`);
  // The fork is private to its owner at first.
  await expect(page.getByTestId("visibility-badge")).toHaveText("private");
  const lineage = page.getByTestId("lineage");
  await expect(lineage.getByTestId(`lineage-${source}`)).toContainText(source);
  await expect(lineage.getByTestId(`lineage-${fork}`)).toContainText(`← ${source}@1.0.0`);
  await expect(lineage.getByTestId(`lineage-${fork}`).locator("[aria-current=page]")).toHaveText(fork);
  // The fork is nested under its source.
  await expect(lineage.locator("li", { has: page.getByTestId(`lineage-${source}`) }).getByTestId(`lineage-${fork}`)).toBeVisible();
  expect((await api<{ forked_from: string }>("GetPattern", { name: fork })).forked_from).toBe(`${source}@1.0.0`);
  await expectAccessible(page);

  // Diff against the source: the same document, so no change.
  await page.getByRole("link", { name: `Diff against ${source}@1.0.0` }).click();
  await expect(page.getByTestId("diff").getByRole("status")).toHaveText("No differences: the two documents do the same thing.");
  // The source's lineage lists the fork too.
  await lineage.getByRole("link", { name: source }).click();
  await expect(page).toHaveURL(new RegExp(`#/marketplace/${source}$`));
  await expect(page.getByTestId("lineage").getByRole("link", { name: fork })).toBeVisible();
});

test("star, then the count changes here and on the server; unstar", async ({ page }) => {
  const name = unique("mkt_star");
  await register(userDoc(name));
  await open(page, `#/marketplace/${name}`);
  await expect(page.getByTestId("star-count")).toHaveText("0");
  const star = page.getByRole("button", { name: "Star", exact: true });
  await expect(star).toHaveAttribute("aria-pressed", "false");
  await star.click();
  await expect(page.getByTestId("star-count")).toHaveText("1");
  await expect(page.getByRole("button", { name: "Starred" })).toHaveAttribute("aria-pressed", "true");
  expect(await storedStars(name)).toBe("1");
  // After a reload the page still shows the count, and that this key starred it.
  await page.reload();
  await expect(page.getByTestId("star-count")).toHaveText("1");
  await expect(page.getByRole("button", { name: "Starred" })).toHaveAttribute("aria-pressed", "true");
  // The list shows it too.
  await open(page, `#/marketplace?q=${name}`);
  await expect(page.getByTestId(`pattern-card-${name}`).getByTestId("stars")).toHaveText("★ 1");
  // And the page remembers the star.
  await page.getByRole("link", { name }).click();
  await page.getByRole("button", { name: "Starred" }).click();
  await expect(page.getByTestId("star-count")).toHaveText("0");
  expect(await storedStars(name)).toBe("0");
});

test("share: change the visibility (the server then reports it) and copy the link", async ({ page, context }) => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  const name = unique("mkt_share");
  await register(userDoc(name, "1.0.0", { visibility: "private" }));
  await open(page, `#/marketplace/${name}`);
  const share = page.getByRole("region", { name: "Share" });
  await expect(page.getByTestId("visibility-badge")).toHaveText("private");
  await share.getByLabel("Visibility").selectOption("tenant");
  await share.getByRole("button", { name: "Save visibility" }).click();
  await expect(share.getByText("Now tenant.")).toBeVisible();
  await expect(page.getByTestId("visibility-badge")).toHaveText("tenant");
  expect((await api<{ visibility: string }>("GetPattern", { name })).visibility).toBe("tenant");
  expect((await api<Versions>("ListPatternVersions", { name })).visibility).toBe("tenant");

  await share.getByRole("button", { name: "Copy link" }).click();
  await expect(share.getByText("Link copied.")).toBeVisible();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied).toBe(`${servers().nexus}/ui/#/marketplace/${name}`);
  // The copied link opens the pattern.
  await page.goto(copied);
  await expect(page.getByRole("heading", { name: new RegExp(`^${name}`), level: 1 })).toBeVisible();
});

test("the pattern page links to the composer, the run form and the executions", async ({ page }) => {
  const name = unique("mkt_links");
  await register(userDoc(name, "1.0.0"));
  await register(userDocV2(name, "1.2.0"));
  await open(page, `#/marketplace/${name}?version=1.0.0`);
  await expect(page.getByTestId("version-1.0.0").getByRole("link", { name: "Version 1.0.0" })).toHaveAttribute("aria-current", "true");
  await expect(page.getByTestId("step-node-audit")).toBeVisible();
  await expect(page.getByRole("link", { name: "Open in composer" })).toHaveAttribute("href", `#/composer/${name}?version=1.0.0`);
  await expect(page.getByRole("link", { name: "Run", exact: true })).toHaveAttribute("href", `#/run/${name}?version=1.0.0`);
  await expect(page.getByRole("link", { name: "Executions" }).last()).toHaveAttribute("href", `#/executions?pattern=${name}`);
  // A step's definition on click.
  await page.getByTestId("step-node-welcome").click();
  await expect(page.getByTestId("step-detail")).toContainText("call: demo.notification.v1.NotificationService/SendEmail");
  // Another version from the table.
  await page.getByRole("link", { name: "Version 1.2.0" }).click();
  await expect(page.getByTestId("step-node-push")).toBeVisible();
  await expect(page.getByRole("link", { name: "Open in composer" })).toHaveAttribute("href", `#/composer/${name}?version=1.2.0`);
});

test("server refusals are shown verbatim: forking onto an existing name, an unknown pattern", async ({ page }) => {
  const name = unique("mkt_refuse");
  await register(userDoc(name));
  await open(page, `#/marketplace/${name}`);
  const forkForm = page.getByRole("region", { name: "Fork" });
  await forkForm.getByLabel("New name").fill("user_creation");
  await forkForm.getByRole("button", { name: "Fork" }).click();
  await expect(forkForm.getByRole("alert")).toContainText("ALREADY_EXISTS");
  await expect(page).toHaveURL(new RegExp(`#/marketplace/${name}$`));

  await open(page, "#/marketplace/no_such_pattern_here");
  await expect(page.getByRole("alert")).toContainText("NOT_FOUND");
});

test("a viewer key sees the pattern but no deprecate, fork, visibility or run controls", async ({ page }) => {
  const name = unique("mkt_viewer");
  const { secured, adminKey, viewerKey } = servers();
  await register(userDoc(name, "1.0.0", { visibility: "tenant" }), { server: secured, key: adminKey });
  await register(userDocV2(name, "1.1.0"), { server: secured, key: adminKey });
  await signIn(page, viewerKey, `#/marketplace/${name}`);
  await expect(page.getByRole("heading", { name: new RegExp(`^${name}`), level: 1 })).toBeVisible();
  await expect(page.getByTestId("version-1.1.0")).toBeVisible();
  await expect(page.getByTestId("step-node-push")).toBeVisible();
  await expect(page.getByRole("button", { name: /Deprecate/ })).toHaveCount(0);
  await expect(page.getByRole("columnheader", { name: "Manage" })).toHaveCount(0);
  await expect(page.getByRole("region", { name: "Fork" })).toHaveCount(0);
  await expect(page.getByLabel("Visibility")).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Save visibility" })).toHaveCount(0);
  await expect(page.getByRole("region", { name: "Share" })).toContainText("Visibility: tenant");
  await expect(page.getByRole("link", { name: "Run", exact: true })).toHaveCount(0);
  // Reading, diffing and starring stay available.
  await expect(page.getByRole("button", { name: "Copy link" })).toBeVisible();
  await expect(page.getByRole("button", { name: "Show diff" })).toBeVisible();
  await expect(page.getByRole("button", { name: "Star", exact: true })).toBeEnabled();
  await expectAccessible(page);
  // The list on the secured server shows it to the viewer (tenant visibility).
  await page.goto(`${secured}/ui/#/marketplace?q=${name}`);
  await expect(page.getByTestId(`pattern-card-${name}`)).toContainText("tenant");
});

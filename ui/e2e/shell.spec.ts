import { expect, expectAccessible, open, screenshot, servers, signIn, test } from "./fixtures";

test("the demo serves the UI at / and every page opens from the navigation", async ({ page }) => {
  await page.goto(`${servers().nexus}/`);
  await expect(page).toHaveURL(/\/ui\/$/);
  await expect(page.getByTestId("principal")).toContainText("local@default");
  for (const name of ["Catalog", "Marketplace", "Executions", "Graph", "Assist", "Composer"]) {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name }).click();
    await expect(page.getByRole("link", { name })).toHaveAttribute("aria-current", "page");
  }
});

test("a server that requires auth asks for a key, refuses a wrong one with its message, accepts a right one", async ({ page }) => {
  await open(page, "#/catalog", "secured");
  await expect(page.getByRole("heading", { name: "Sign in" })).toBeVisible();
  await expectAccessible(page);
  await screenshot(page, "signin");
  await page.getByLabel("API key").fill("nxs_nope_nope");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toContainText("UNAUTHENTICATED");
  await signIn(page, servers().viewerKey, "#/catalog");
  await expect(page.getByTestId("principal")).toContainText("vic@acme · viewer");
});

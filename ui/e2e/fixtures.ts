// What every browser test shares: the servers started by global-setup.ts, a page signed in (or
// not) on one of them, unique names so tests never collide on the shared server, an axe check and
// named screenshots (test-results/screenshots/<name>.png, looked at by people, one in the README).
import AxeBuilder from "@axe-core/playwright";
import { test as base, expect, type Page } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { STATE_ENV } from "./global-setup";

export interface Servers {
  /** Open demo server (everyone is admin of tenant `default`). */
  nexus: string;
  backends: string;
  /** The same backends behind `--require-auth`. */
  secured: string;
  adminKey: string;
  viewerKey: string;
}

export function servers(): Servers {
  const state = process.env[STATE_ENV];
  if (!state) throw new Error(`${STATE_ENV} is not set: run the tests with \`npx playwright test\` (global-setup.ts)`);
  return JSON.parse(state) as Servers;
}

let counter = 0;
/** A name no other test (or run) uses: `prefix_<random>`. */
export function unique(prefix: string): string {
  counter += 1;
  return `${prefix}_${Date.now().toString(36)}${counter}${Math.floor(Math.random() * 1e4)}`;
}

// Outside Playwright's output directory, which every run empties.
export const SCREENSHOTS = resolve(import.meta.dirname, "../screenshots");

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: resolve(SCREENSHOTS, `${name}.png`), fullPage: false });
}

/** axe-core on the current page: no serious or critical violation. */
export async function expectAccessible(page: Page): Promise<void> {
  const results = await new AxeBuilder({ page }).analyze();
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join(", ")}`),
  ).toEqual([]);
}

/** Opens `hash` (e.g. `#/catalog`) of the open demo server. */
export async function open(page: Page, hash = "#/composer", server: "nexus" | "secured" = "nexus"): Promise<void> {
  await page.goto(`${servers()[server]}/ui/${hash}`);
}

/** Signs in on the secured server with `key` and lands on `hash`. */
export async function signIn(page: Page, key: string, hash = "#/composer"): Promise<void> {
  await page.goto(`${servers().secured}/ui/#/signin`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByTestId("principal")).toBeVisible();
  await page.goto(`${servers().secured}/ui/${hash}`);
}

export const test = base;
export { expect };

// Browser tests: Debian's chromium (installed by scripts/ui-setup.sh; never a downloaded browser)
// against real Nexus servers with the demo services, started by e2e/global-setup.ts.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "e2e",
  globalSetup: "./e2e/global-setup.ts",
  globalTeardown: "./e2e/global-teardown.ts",
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: process.env.CI ? 2 : 2,
  retries: 0,
  reporter: process.env.CI ? [["list"]] : [["list"]],
  outputDir: "test-results",
  // The timed test runs last and alone (two cores: beside other browser tests its frame times
  // would measure them, not the composer).
  projects: [
    { name: "ui", testIgnore: /perf\.spec\.ts/ },
    { name: "perf", testMatch: /perf\.spec\.ts/, dependencies: ["ui"] },
  ],
  use: {
    headless: true,
    viewport: { width: 1440, height: 900 },
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-quic",
        "--no-first-run",
        "--disable-sync",
      ],
    },
  },
});

// Starts the servers the browser tests run against, all real processes of the `nexus` binary:
//   - `nexus demo` (demo backends + an open Nexus with the example patterns), and
//   - `nexus serve --require-auth` on the same demo backends, with an admin and a viewer API key.
// Their addresses and keys go to the tests in $NEXUS_E2E_SERVERS (see fixtures.ts), so several
// runs at once never share servers. With NEXUS_UI_DIR=ui/dist the servers serve the UI from disk
// (no Rust rebuild while working on the UI); without it, the bundle embedded in the binary.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** The servers' addresses and keys, as JSON, for the tests (workers inherit this process's env). */
export const STATE_ENV = "NEXUS_E2E_SERVERS";

const BIN = process.env.NEXUS_BIN ?? resolve(import.meta.dirname, "../../target/debug/nexus");

/** Starts `args` and resolves with the lines printed until `ready` matches. */
function start(args: string[], ready: RegExp | null, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; out: string }> {
  return new Promise((resolveStart, reject) => {
    const child = spawn(BIN, args, { env: { ...process.env, RUST_LOG: "warn", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`${BIN} ${args.join(" ")}: not ready in 60 s\n${out}\n${err}`)), 60_000);
    if (ready === null) {
      clearTimeout(timer);
      resolveStart({ child, out });
    }
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (ready?.test(out)) {
        clearTimeout(timer);
        resolveStart({ child, out });
      }
    });
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
      if (process.env.NEXUS_E2E_LOGS) process.stderr.write(d);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${BIN} ${args.join(" ")} exited with ${code}\n${out}\n${err}`));
    });
  });
}

async function freePort(): Promise<number> {
  const net = await import("node:net");
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

export default async function globalSetup() {
  const demo = await start(["demo", "--listen", "127.0.0.1:0"], /Serving until Ctrl-C/);
  const nexus = /Nexus\s+(http:\/\/\S+)/.exec(demo.out)?.[1];
  const backends = /backends\s+(http:\/\/\S+)/.exec(demo.out)?.[1];
  if (!nexus || !backends) throw new Error(`cannot read the demo's addresses:\n${demo.out}`);

  const dataDir = mkdtempSync(join(tmpdir(), "nexus-e2e-"));
  const token = (subject: string, role: string) =>
    execFileSync(BIN, ["token", "create", "--tenant", "acme", "--subject", subject, "--role", role, "--data-dir", dataDir], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  const adminKey = token("ada", "admin");
  const viewerKey = token("vic", "viewer");
  const port = await freePort();
  const secured = await start(
    ["serve", "--require-auth", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--service", `demo=${backends}`],
    null,
  ).catch(async (e) => {
    demo.child.kill("SIGTERM");
    throw e;
  });
  // `serve` logs to stderr: wait for the port to answer.
  const securedUrl = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`${securedUrl}/ui/`);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  process.env[STATE_ENV] = JSON.stringify({
      nexus,
      backends,
      secured: securedUrl,
      adminKey,
      viewerKey,
      pids: [demo.child.pid, secured.child.pid],
  });
}

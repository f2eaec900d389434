import { STATE_ENV } from "./global-setup";

export default async function globalTeardown() {
  const state = process.env[STATE_ENV];
  if (!state) return;
  for (const pid of (JSON.parse(state) as { pids: number[] }).pids) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // already gone
    }
  }
}

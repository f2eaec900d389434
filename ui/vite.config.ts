// Vite build of the web composer. The bundle goes to `dist/`, which is committed and embedded in
// the Nexus binary (crates/server/src/ui.rs) and served under /ui/ on Nexus's one port.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  base: "/ui/",
  plugins: [react()],
  build: {
    outDir: process.env.NEXUS_UI_OUT ?? "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 2048,
    sourcemap: false,
  },
  server: {
    // `npm run dev` talks to a Nexus on :50051 (e.g. `cargo run --bin nexus -- demo`).
    proxy: { "/nexus.v1.NexusService": "http://127.0.0.1:50051" },
  },
  test: {
    include: ["src/**/*.test.ts"],
  },
});

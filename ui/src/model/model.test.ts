// Document ↔ graph ↔ YAML round trips over every example pattern and a generated corpus of 200
// documents, and the edits the composer makes (connect, disconnect, rename, remove).
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { generatePattern } from "./generate";
import { docToGraph, edgesOf, graphToDoc, INPUT_NODE, OUTPUT_NODE, stepIndexByNode, type PatternGraph } from "./graph";
import { addStep, connect, disconnect, idFromAction, nextPatch, parsePath, removeStep, renameStep, setPatternField, setStepField } from "./ops";
import { refsInString } from "./refs";
import { flattenFields, typeName } from "./schema";
import type { Json, PatternDoc } from "./types";
import { docToYaml, parseYaml, type UiAnnotation } from "./yaml";

// Every file under patterns/ at the root of the repository, read from disk by Vite's loader.
const FILES = import.meta.glob("../../../patterns/*.{yaml,yml,json}", { query: "?raw", import: "default", eager: true }) as Record<string, string>;

/** Deep equality that also compares key order (JSON text is order-sensitive). */
function same(a: unknown, b: unknown) {
  expect(a).toEqual(b);
  expect(JSON.stringify(a)).toBe(JSON.stringify(b));
}

function layoutOf(g: PatternGraph): UiAnnotation {
  const layout: Record<string, [number, number]> = {};
  g.nodes.forEach((n, i) => {
    const key = n.kind === "step" ? n.id.replace(/^step[:#]/, "") : n.id;
    layout[key] = [i * 240.5, (i % 3) * 80 - 100];
  });
  return { layout };
}

function roundTrip(doc: PatternDoc) {
  // document → graph → document: identical, key order included.
  const g = docToGraph(doc);
  const back = graphToDoc(g);
  same(back, doc);
  // graph → document → graph: identical.
  same(docToGraph(back), g);
  // document → YAML → document (with the layout annotation and comments): identical.
  const ann = layoutOf(g);
  const text = docToYaml(doc, ann, ["# a comment", "#"]);
  const parsed = parseYaml(text);
  if (!parsed.ok) throw new Error(`${parsed.message} at line ${parsed.line}\n${text}`);
  same(parsed.doc, doc);
  same(parsed.annotation, ann);
  expect(parsed.comments).toEqual(["# a comment", "#"]);
  // The annotation is a comment: any YAML reader sees the document alone.
  same(parse(text) ?? {}, doc);
  // And the text is stable: printing the parsed document again gives the same text.
  expect(docToYaml(parsed.doc, parsed.annotation, parsed.comments)).toBe(text);
}

describe("example patterns", () => {
  const names = Object.keys(FILES);
  it("finds the examples", () => {
    expect(names.length).toBeGreaterThanOrEqual(3);
  });
  for (const [file, text] of Object.entries(FILES)) {
    it(`round trips ${file.split("/").pop()}`, () => {
      const parsed = parseYaml(text);
      if (!parsed.ok) throw new Error(parsed.message);
      expect(Object.keys(parsed.doc).length).toBeGreaterThan(0);
      roundTrip(parsed.doc);
    });
  }

  it("draws user_creation's edges", () => {
    const text = Object.entries(FILES).find(([f]) => f.endsWith("user_creation.yaml"))?.[1];
    const parsed = parseYaml(text ?? "");
    if (!parsed.ok) throw new Error("user_creation.yaml");
    const g = docToGraph(parsed.doc);
    expect(g.nodes.map((n) => n.id)).toEqual([INPUT_NODE, "step:user", "step:avatar", "step:welcome", "step:announce", OUTPUT_NODE]);
    const labels = g.edges.map((e) => `${e.source}.${e.sourcePath} -> ${e.target}.${e.targetField}`);
    expect(labels).toContain("$input.email -> step:user.with.email");
    expect(labels).toContain("step:user.user.id -> step:avatar.with.owner_id");
    expect(labels).toContain("$input.avatar_url -> step:avatar.when");
    expect(labels).toContain("step:user.user.id -> step:welcome.with.body");
    expect(labels).toContain("step:user.user.id -> step:announce.emit.subject");
    expect(labels).toContain("step:user.user.id -> step:announce.emit.data.user_id");
    expect(labels).toContain("step:avatar.asset.url -> $output.output.avatar_url");
    expect(labels).toContain("step:welcome.message_id -> $output.output.email_id");
    // Its compensation reads the step itself: a self edge.
    expect(labels).toContain("step:user.user.id -> step:user.compensate.with.user_id");
    // The leading comments are kept, the editors' schema line first.
    expect(parsed.comments[0]).toBe("# yaml-language-server: $schema=../schema/pattern.json");
    expect(parsed.comments[1]).toMatch(/^# Create a user/);
  });
});

describe("generated corpus", () => {
  const docs = Array.from({ length: 200 }, (_, i) => generatePattern(i + 1));

  it("covers every feature of the document", () => {
    const seen = new Set<string>();
    for (const d of docs) {
      for (const k of Object.keys(d)) seen.add(k);
      for (const s of (d.steps as Json[] | undefined) ?? []) {
        if (s && typeof s === "object" && !Array.isArray(s)) {
          for (const k of Object.keys(s)) seen.add(`step.${k}`);
          if (s.wait_for && typeof s.wait_for === "object" && "any" in s.wait_for) seen.add("wait_for.any");
          if (s.with && typeof s.with === "object" && Object.values(s.with).some((v) => typeof v === "object" && v !== null)) seen.add("with.nested");
        }
      }
    }
    for (const k of ["name", "version", "description", "owner", "visibility", "durability", "timeout", "input", "steps", "output", "tags", "on", "schedule"]) {
      expect(seen, k).toContain(k);
    }
    for (const k of ["id", "call", "with", "depends_on", "when", "for_each", "concurrency", "retry", "timeout", "compensate", "stream", "emit", "wait_for"]) {
      expect(seen, `step.${k}`).toContain(`step.${k}`);
    }
    expect(seen).toContain("wait_for.any");
    expect(seen).toContain("with.nested");
  });

  docs.forEach((doc, i) => {
    it(`round trips document ${i + 1}`, () => roundTrip(doc));
  });

  it("draws an edge for every reference", () => {
    let edges = 0;
    for (const d of docs) {
      const g = docToGraph(d);
      edges += g.edges.length;
      const nodeIds = new Set(g.nodes.map((n) => n.id));
      for (const e of g.edges) {
        expect(nodeIds.has(e.source)).toBe(true);
        expect(nodeIds.has(e.target)).toBe(true);
      }
      expect(new Set(g.edges.map((e) => e.id)).size).toBe(g.edges.length);
    }
    expect(edges).toBeGreaterThan(500);
  });
});

describe("references", () => {
  it("reads steps and input paths, not methods, quoted text or other roots", () => {
    expect(refsInString("${{ steps.user.user.id }}", false)).toEqual([{ root: "steps", step: "user", path: "user.id" }]);
    expect(refsInString("Hi ${{ input.name }}, ${{ steps.a.items.size() }}", false)).toEqual([
      { root: "input", path: "name" },
      { root: "steps", step: "a", path: "items" },
    ]);
    expect(refsInString("${{ 'steps.fake.x' + event.steps.y }}", false)).toEqual([]);
    expect(refsInString("${{ {'a': '}}'}.a + steps.b.c }}", false)).toEqual([{ root: "steps", step: "b", path: "c" }]);
    expect(refsInString("has(input.avatar_url)", true)).toEqual([{ root: "input", path: "avatar_url" }]);
    expect(refsInString("has(input.avatar_url)", false)).toEqual([]);
  });
});

describe("edits", () => {
  const base: PatternDoc = { name: "p", version: "1.0.0", steps: [] };

  it("adds steps with ids from the action, unique", () => {
    expect(idFromAction("demo.user.v1.UserService/CreateUser")).toBe("create_user");
    let d = addStep(base, "demo.user.v1.UserService/CreateUser").doc;
    const r = addStep(d, "demo.user.v1.UserService/CreateUser");
    expect(r.id).toBe("create_user_2");
    d = r.doc;
    expect((d.steps as Json[]).length).toBe(2);
  });

  it("connects an output field to an input field and disconnects it", () => {
    let d = addStep(base, "demo.user.v1.UserService/CreateUser", "user").doc;
    d = addStep(d, "demo.asset.v1.AssetService/UploadAsset", "avatar").doc;
    d = connect(d, { ref: { root: "steps", step: "user", path: "user.id" }, target: { kind: "step", index: 1 }, field: "with.owner_id" });
    d = connect(d, { ref: { root: "input", path: "avatar_url" }, target: { kind: "step", index: 1 }, field: "with.source_url" });
    d = connect(d, { ref: { root: "steps", step: "avatar", path: "asset.url" }, target: { kind: "output" }, field: "output.url" });
    same(d, {
      name: "p",
      version: "1.0.0",
      steps: [
        { id: "user", call: "demo.user.v1.UserService/CreateUser" },
        {
          id: "avatar",
          call: "demo.asset.v1.AssetService/UploadAsset",
          with: { owner_id: "${{ steps.user.user.id }}", source_url: "${{ input.avatar_url }}" },
        },
      ],
      output: { url: "${{ steps.avatar.asset.url }}" },
    });
    const edges = edgesOf(d);
    expect(edges.map((e) => e.label)).toEqual(["user.id → with.owner_id", "avatar_url → with.source_url", "asset.url → output.url"]);
    const idx = stepIndexByNode(d);
    let e = edges[0];
    d = disconnect(d, e, (n) => idx.get(n));
    e = edges[1];
    d = disconnect(d, e, (n) => idx.get(n));
    d = disconnect(d, edges[2], (n) => idx.get(n));
    // The emptied `with` and `output` go too.
    same(d, { name: "p", version: "1.0.0", steps: [{ id: "user", call: "demo.user.v1.UserService/CreateUser" }, { id: "avatar", call: "demo.asset.v1.AssetService/UploadAsset" }] });
  });

  it("keeps depends_on as edges and removes them with the step", () => {
    let d = addStep(base, "a.A/X", "a").doc;
    d = addStep(d, "a.A/Y", "b").doc;
    d = connect(d, { ref: { root: "steps", step: "a", path: "" }, target: { kind: "step", index: 1 }, field: "depends_on" });
    expect(edgesOf(d).map((e) => [e.kind, e.source, e.target])).toEqual([["depends_on", "step:a", "step:b"]]);
    d = removeStep(d, 0);
    same(d.steps, [{ id: "b", call: "a.A/Y" }]);
  });

  it("renames a step and every reference to it", () => {
    const d: PatternDoc = {
      steps: [
        { id: "u", call: "x.S/A" },
        { id: "v", depends_on: ["u"], when: "steps.u.ok", call: "x.S/B", with: { a: "${{ steps.u.id }} and ${{ steps.uu.id }}", b: "'steps.u.id'" } },
      ],
      output: { id: "${{ steps.u.id }}" },
    };
    const r = renameStep(d, 0, "user");
    same(r, {
      steps: [
        { id: "user", call: "x.S/A" },
        { id: "v", depends_on: ["user"], when: "steps.user.ok", call: "x.S/B", with: { a: "${{ steps.user.id }} and ${{ steps.uu.id }}", b: "'steps.u.id'" } },
      ],
      output: { id: "${{ steps.user.id }}" },
    });
  });

  it("inserts new keys where the proto puts them and keeps existing order", () => {
    let d: PatternDoc = { steps: [{ call: "x.S/A", id: "a" }], name: "n" };
    d = setStepField(d, 0, "timeout", "2s");
    d = setStepField(d, 0, "with.a.b[0]", 1);
    d = setPatternField(d, "version", "1.0.0");
    same(d, { steps: [{ call: "x.S/A", id: "a", with: { a: { b: [1] } }, timeout: "2s" }], name: "n", version: "1.0.0" });
    expect(parsePath("with.a[0].b")).toEqual(["with", "a", 0, "b"]);
    expect(nextPatch("1.2.3")).toBe("1.2.4");
  });
});

describe("YAML", () => {
  it("reports a parse error with its line and keeps the annotation separate", () => {
    const r = parseYaml("# nexus-ui: {\"layout\":{\"a\":[1,2]}}\nname: x\nsteps:\n  - id: a\n   call: b\n");
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.line).toBeGreaterThanOrEqual(4);
    const ok = parseYaml("# nexus-ui: {\"layout\":{\"a\":[1,2]}}\nname: x\n");
    expect(ok.ok && ok.annotation).toEqual({ layout: { a: [1, 2] } });
    expect(parseYaml("- a\n- b").ok).toBe(false);
    const empty = parseYaml("");
    expect(empty.ok && empty.doc).toEqual({});
  });
});

describe("schemas", () => {
  it("flattens message fields to paths", () => {
    const schema = {
      type: "object",
      title: "demo.user.v1.CreateUserResponse",
      properties: {
        user: {
          type: "object",
          title: "demo.user.v1.User",
          properties: {
            id: { type: "string" },
            created_at: { type: "string", format: "date-time" },
            roles: { type: "array", items: { type: "string" } },
            sequence: { type: ["integer", "string"], pattern: "^-?[0-9]+$" },
          },
        },
        kind: { type: ["string", "integer"], enum: ["A", "B"] },
      },
    };
    expect(flattenFields(schema).map((f) => `${f.path}:${f.type}`)).toEqual([
      "user:User",
      "user.id:string",
      "user.created_at:timestamp",
      "user.roles:list<string>",
      "user.sequence:int64",
      "kind:enum",
    ]);
    expect(typeName({ type: "integer" })).toBe("integer");
  });
});

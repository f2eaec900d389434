import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PatternSchema } from "../gen/nexus/v1/nexus_pb";
import { docOfPattern, draftHref, MAX_DRAFTS, readDraft, stashDraft } from "./draft";

function memoryStore() {
  const m = new Map<string, string>();
  return {
    m,
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
  };
}

describe("drafts handed to the composer", () => {
  it("keeps a document under a fresh key and reads it back", () => {
    const store = memoryStore();
    const doc = { name: "a_then_b", version: "1.0.0", steps: [{ id: "a", call: "pattern:a@1.0.0" }] };
    const key = stashDraft({ doc, origin: "the suggestion “x”" }, store);
    expect(key).toBeTruthy();
    expect(readDraft(key!, store)).toEqual({ doc, origin: "the suggestion “x”" });
    expect(draftHref(key!)).toBe(`#/composer?draft=${key}`);
  });

  it("answers null for an unknown key, a missing store or a value that is no document", () => {
    const store = memoryStore();
    expect(readDraft("nope", store)).toBeNull();
    expect(readDraft("k", null)).toBeNull();
    expect(stashDraft({ doc: {}, origin: "" }, null)).toBeNull();
    store.setItem("nexus.composer.draft:bad", "{not json");
    expect(readDraft("bad", store)).toBeNull();
    store.setItem("nexus.composer.draft:arr", JSON.stringify({ doc: [1] }));
    expect(readDraft("arr", store)).toBeNull();
  });

  it("keeps only the last drafts", () => {
    const store = memoryStore();
    const keys = Array.from({ length: MAX_DRAFTS + 3 }, (_, i) => stashDraft({ doc: { name: `d${i}` }, origin: "" }, store)!);
    expect(readDraft(keys[0], store)).toBeNull();
    expect(readDraft(keys[2], store)).toBeNull();
    expect(readDraft(keys[3], store)?.doc.name).toBe("d3");
    expect(readDraft(keys[keys.length - 1], store)?.doc.name).toBe(`d${MAX_DRAFTS + 2}`);
    expect([...store.m.keys()].filter((k) => k.startsWith("nexus.composer.draft:"))).toHaveLength(MAX_DRAFTS);
  });

  it("turns a Pattern message into the composer's document, without the fields the server sets", () => {
    const p = create(PatternSchema, {
      name: "x",
      version: "1.0.0",
      tenant: "acme",
      stars: 3n,
      steps: [{ id: "user", call: "demo.user.v1.UserService/CreateUser", dependsOn: ["z"] }],
    });
    expect(docOfPattern(p)).toEqual({ name: "x", version: "1.0.0", steps: [{ id: "user", call: "demo.user.v1.UserService/CreateUser", depends_on: ["z"] }] });
  });
});

import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ChangeKind, PatternChangeSchema, PatternSchema, StepSchema } from "../gen/nexus/v1/nexus_pb";
import { compareVersions, diffSteps, refsInText, splitRef, stepEdges, stepHighlights } from "./diff";

const step = (id: string, extra: Record<string, unknown> = {}) => create(StepSchema, { id, call: "a.B/C", ...extra });

describe("step references", () => {
  it("finds steps.X in expressions only", () => {
    expect([...refsInText("${{ steps.user.user.id }} and ${{ steps['avatar'].url + steps.b }}")]).toEqual(["user", "avatar", "b"]);
    expect([...refsInText("steps.user outside an expression")]).toEqual([]);
  });

  it("draws data edges from with/when/for_each/compensate/emit and order edges from depends_on", () => {
    const steps = [
      step("user"),
      step("avatar", { when: "${{ has(steps.user.user) }}", with: { owner_id: "${{ steps.user.user.id }}" } }),
      step("welcome", { dependsOn: ["avatar"], with: { body: "Hi ${{ steps.user.user.display_name }}" } }),
      step("ghost", { with: { x: "${{ steps.nope.x }}" } }),
    ];
    expect(stepEdges(steps)).toEqual([
      { from: "user", to: "avatar", kind: "data" },
      { from: "user", to: "welcome", kind: "data" },
      { from: "avatar", to: "welcome", kind: "order" },
    ]);
  });
});

describe("diff on the graph", () => {
  const ch = (kind: ChangeKind, path: string) => create(PatternChangeSchema, { kind, path });
  it("maps change paths onto steps", () => {
    const h = stepHighlights([
      ch(ChangeKind.CHANGED, "description"),
      ch(ChangeKind.ADDED, "steps.audit"),
      ch(ChangeKind.REMOVED, "steps.old"),
      ch(ChangeKind.CHANGED, "steps.user.timeout"),
      ch(ChangeKind.ADDED, "steps.user.with.roles"),
    ]);
    expect(Object.fromEntries(h)).toEqual({ audit: "added", old: "removed", user: "changed" });
  });

  it("draws the union of both versions' steps", () => {
    const from = create(PatternSchema, { steps: [step("a"), step("old"), step("b")] });
    const to = create(PatternSchema, { steps: [step("a"), step("b"), step("new")] });
    expect(diffSteps(from, to).map((s) => s.id)).toEqual(["a", "b", "new", "old"]);
  });

  it("splits refs and orders versions", () => {
    expect(splitRef("user_creation@1.2.0")).toEqual({ name: "user_creation", version: "1.2.0" });
    expect(splitRef("x")).toEqual({ name: "x", version: "" });
    expect(["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.9"].sort(compareVersions)).toEqual(["0.9.9", "1.2.0-rc.1", "1.2.0", "1.10.0"]);
  });
});

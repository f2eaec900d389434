import { describe, expect, it } from "vitest";
import { SuggestionKind } from "../gen/nexus/v1/nexus_pb";
import {
  bestFirst,
  EMPTY_FILTERS,
  emptyGenerateForm,
  fieldProblems,
  fieldRow,
  filtersFromQuery,
  filtersToQuery,
  formProblem,
  gainFigures,
  generateRequest,
  hasFilters,
  isImprovement,
  kindLabel,
  kindValue,
  looksLikeFieldList,
  parseGoalFields,
  percent,
  splitPatternRef,
  suggestRequest,
} from "./assistModel";

describe("goal fields as text", () => {
  it("splits `name:type` items on commas, semicolons and new lines", () => {
    expect(parseGoalFields("email:string, name:string")).toEqual([
      { name: "email", type: "string" },
      { name: "name", type: "string" },
    ]);
    expect(parseGoalFields("a : int64;b:demo.user.v1.User\nc: string []")).toEqual([
      { name: "a", type: "int64" },
      { name: "b", type: "demo.user.v1.User" },
      { name: "c", type: "string[]" },
    ]);
  });

  it("keeps a field without a type and skips empty items", () => {
    expect(parseGoalFields("user_id, , email_id,")).toEqual([
      { name: "user_id", type: "" },
      { name: "email_id", type: "" },
    ]);
    expect(parseGoalFields("   ")).toEqual([]);
  });

  it("tells a list from a plain name", () => {
    expect(looksLikeFieldList("email")).toBe(false);
    expect(looksLikeFieldList("email:string")).toBe(true);
    expect(looksLikeFieldList("a, b")).toBe(true);
  });
});

describe("goal field rows", () => {
  it("flags bad names, duplicates, missing and malformed types; ignores empty rows", () => {
    const rows = [fieldRow("email", "string"), fieldRow("", ""), fieldRow("1st", "string"), fieldRow("email", "string"), fieldRow("name", ""), fieldRow("x", "not a type"), fieldRow("", "string")];
    const p = fieldProblems(rows, true);
    expect(p.has(rows[0].key)).toBe(false);
    expect(p.has(rows[1].key)).toBe(false);
    expect(p.get(rows[2].key)).toMatch(/not a field name/);
    expect(p.get(rows[3].key)).toMatch(/listed twice/);
    expect(p.get(rows[4].key)).toMatch(/Give `name` a type/);
    expect(p.get(rows[5].key)).toMatch(/is not a type/);
    expect(p.get(rows[6].key)).toMatch(/Give the field a name/);
  });

  it("accepts list types and an optional type for outputs", () => {
    const rows = [fieldRow("ids", "string[]"), fieldRow("user_id", "")];
    expect(fieldProblems(rows, false).size).toBe(0);
    expect(fieldProblems(rows, true).size).toBe(1);
  });
});

describe("the GeneratePattern request", () => {
  it("trims, drops empty rows, dedupes actions and bounds the number of candidates", () => {
    const f = {
      ...emptyGenerateForm(),
      goal: "  create a user and send them a welcome email ",
      inputs: [fieldRow(" email ", "string"), fieldRow("", "")],
      outputs: [fieldRow("user_id", ""), fieldRow("email_id", "")],
      useActions: ["demo.user.v1.UserService/CreateUser", "demo.user.v1.UserService/CreateUser", " "],
      endWith: " demo.notification.v1.NotificationService/SendEmail ",
      limit: "50",
    };
    expect(generateRequest(f)).toEqual({
      goal: "create a user and send them a welcome email",
      inputs: [{ name: "email", type: "string" }],
      outputs: [
        { name: "user_id", type: "" },
        { name: "email_id", type: "" },
      ],
      useActions: ["demo.user.v1.UserService/CreateUser"],
      endWith: "demo.notification.v1.NotificationService/SendEmail",
      name: "",
      limit: 20,
      offline: false,
    });
    expect(generateRequest({ ...f, limit: "" }).limit).toBe(0);
  });

  it("says why a form cannot be sent", () => {
    expect(formProblem(emptyGenerateForm())).toMatch(/Say what the pattern should do/);
    expect(formProblem({ ...emptyGenerateForm(), goal: "x" })).toBeNull();
    expect(formProblem({ ...emptyGenerateForm(), endWith: "a.B/C" })).toBeNull();
    expect(formProblem({ ...emptyGenerateForm(), goal: "x", limit: "0" })).toMatch(/1 to 20/);
    expect(formProblem({ ...emptyGenerateForm(), goal: "x", inputs: [fieldRow("a b", "string")] })).toMatch(/inputs/);
    // A type-less input is left to the server (it says what it needs).
    expect(formProblem({ ...emptyGenerateForm(), goal: "x", inputs: [fieldRow("a", "")] })).toBeNull();
  });

  it("orders candidates best first, keeping the server's order among equal scores", () => {
    const xs = [{ score: 1, id: "a" }, { score: 2.5, id: "b" }, { score: 1, id: "c" }, { score: -1, id: "d" }];
    expect(bestFirst(xs).map((x) => x.id)).toEqual(["b", "a", "c", "d"]);
  });
});

describe("suggestion filters", () => {
  it("round-trips through the address and drops unknown kinds", () => {
    const f = { ...EMPTY_FILTERS, kind: "composite", pattern: "user_creation", minSupport: "4" };
    const q = filtersToQuery(f);
    expect(q).toBe("kind=composite&pattern=user_creation&min_support=4");
    expect(filtersFromQuery(new URLSearchParams(q))).toEqual(f);
    expect(filtersFromQuery(new URLSearchParams("kind=nope")).kind).toBe("");
    expect(hasFilters(EMPTY_FILTERS)).toBe(false);
    expect(hasFilters(f)).toBe(true);
  });

  it("makes the SuggestPatterns request, leaving bad thresholds to the server's defaults", () => {
    expect(suggestRequest({ kind: "retry_policy", pattern: " a ", minSupport: "5", minConfidence: "50" })).toEqual({
      kinds: [SuggestionKind.RETRY_POLICY],
      patternName: "a",
      minSupport: 5,
      minConfidence: 0.5,
    });
    expect(suggestRequest({ kind: "", pattern: "", minSupport: "2.5", minConfidence: "150" })).toEqual({ kinds: [], patternName: "", minSupport: 0, minConfidence: 0 });
  });
});

describe("suggestions in words", () => {
  it("names kinds and tells improvements apart", () => {
    expect(kindValue(SuggestionKind.COMPOSITE)).toBe("composite");
    expect(kindLabel(SuggestionKind.SHARED_SUBPATTERN)).toBe("Shared sub-pattern");
    expect(kindValue(99 as SuggestionKind)).toBe("unknown");
    expect(isImprovement(SuggestionKind.RETRY_POLICY)).toBe(true);
    expect(isImprovement(SuggestionKind.COMPOSITE)).toBe(false);
  });

  it("prints shares, gains and pattern references", () => {
    expect(percent(0.8)).toBe("80 %");
    expect(percent(1)).toBe("100 %");
    const gain = { callsSavedPerRun: 1, latencySavedMs: 1.754, failuresAvoidedPer1000: 0, summary: "" } as Parameters<typeof gainFigures>[0];
    expect(gainFigures(gain)).toEqual(["1 call saved per run", "1.75 ms saved per run"]);
    expect(gainFigures(undefined)).toEqual([]);
    expect(splitPatternRef("user_creation@1.0.0")).toEqual({ name: "user_creation", version: "1.0.0" });
    expect(splitPatternRef("user_creation")).toEqual({ name: "user_creation", version: "" });
  });
});

import type { JsonObject } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { draftFrom, formable, inputOf, kindOf, parseInputJson, properties, type Draft } from "./runFormModel";

const schema: JsonObject = {
  type: "object",
  required: ["name", "count", "mode", "address"],
  properties: {
    address: { type: "object", required: ["city"], properties: { city: { type: "string" }, zip: { type: "string", pattern: "^[0-9]{5}$" } } },
    count: { type: "integer", minimum: 1, default: 2 },
    mode: { enum: ["fast", "slow", 3] },
    name: { type: "string", minLength: 2 },
    ratio: { type: "number", maximum: 1 },
    tags: { type: "array", items: { type: "string" } },
    verbose: { type: "boolean" },
    extra: { type: "object" },
    anything: {},
    either: { oneOf: [{ type: "string" }, { type: "integer" }] },
  },
};

describe("kinds", () => {
  it("maps every schema node to an editor", () => {
    const kinds = Object.fromEntries(properties(schema).map(([k, s]) => [k, kindOf(s)]));
    expect(kinds).toEqual({
      name: "string",
      count: "number",
      mode: "enum",
      address: "object",
      anything: "json",
      either: "json",
      extra: "json",
      ratio: "number",
      tags: "array",
      verbose: "boolean",
    });
    expect(formable(schema)).toBe(true);
    expect(formable({ type: "object" })).toBe(false);
    expect(formable(undefined)).toBe(false);
  });

  it("puts required properties first, in the order `required` lists them", () => {
    expect(properties(schema).map(([k]) => k)).toEqual(["name", "count", "mode", "address", "anything", "either", "extra", "ratio", "tags", "verbose"]);
  });
});

describe("inputOf", () => {
  it("starts from defaults and names every missing or wrong field", () => {
    const d = draftFrom(schema, undefined);
    const { errors } = inputOf(schema, d);
    expect(Object.fromEntries(errors)).toEqual({ name: "Required.", mode: "Required.", "address.city": "Required." });
  });

  it("checks numbers, lengths, patterns and JSON fields", () => {
    const value = { name: "A", count: 1, mode: "fast", address: { city: "Paris", zip: "75" } };
    const d = draftFrom(schema, value) as Extract<Draft, { kind: "object" }>;
    d.fields.count = { kind: "number", text: "1.5" };
    d.fields.ratio = { kind: "number", text: "abc" };
    d.fields.extra = { kind: "json", text: "[1]" };
    d.fields.anything = { kind: "json", text: "{oops" };
    const { errors } = inputOf(schema, d);
    expect(errors.get("name")).toBe("At least 2 characters.");
    expect(errors.get("count")).toBe("Must be a whole number.");
    expect(errors.get("ratio")).toBe("Must be a number.");
    expect(errors.get("address.zip")).toBe("Must match ^[0-9]{5}$.");
    expect(errors.get("extra")).toBe("Must be a JSON object ({…}).");
    expect(errors.get("anything")).toMatch(/^Not valid JSON/);
  });

  it("round-trips a full input through the draft, typed", () => {
    const value = {
      name: "Ada",
      count: 3,
      mode: 3,
      address: { city: "Paris", zip: "75001" },
      ratio: 0.5,
      tags: ["a", "b"],
      verbose: false,
      extra: { deep: [1, { x: null }] },
      anything: "text",
      either: 7,
      notInSchema: true,
    };
    const { input, errors } = inputOf(schema, draftFrom(schema, value));
    expect(errors.size).toBe(0);
    expect(input).toEqual(value);
  });

  it("leaves out empty optional fields and flags empty list items", () => {
    const d = draftFrom(schema, { name: "Ada", mode: "slow", address: { city: "X" }, tags: [""] });
    const { input, errors } = inputOf(schema, d);
    expect(errors.get("tags[0]")).toBe("Fill in this item or remove it.");
    expect(input).toEqual({ name: "Ada", count: 2, mode: "slow", address: { city: "X" }, tags: [] });
  });
});

describe("parseInputJson", () => {
  it("accepts objects only", () => {
    expect(parseInputJson('{"a": 1}')).toEqual({ input: { a: 1 } });
    expect(parseInputJson("")).toEqual({ input: {} });
    expect(parseInputJson("[1]").error).toBe("The input must be a JSON object ({…}).");
    expect(parseInputJson("{").error).toMatch(/^The input is not valid JSON/);
  });
});

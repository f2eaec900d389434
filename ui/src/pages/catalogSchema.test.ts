import { describe, expect, it } from "vitest";
import type { JsonObject } from "@bufbuild/protobuf";
import { describeMessage, example, fieldNames } from "./catalogSchema";

// The shape crates/core/src/schema.rs produces, plus the `description`s and enum `title` the
// catalog shows when the server includes them.
const user: JsonObject = {
  type: "object",
  title: "demo.user.v1.User",
  description: "A user of the demo.",
  additionalProperties: false,
  properties: {
    id: { type: "string", description: "Server-assigned id." },
    created_at: { type: "string", format: "date-time" },
    roles: { type: "array", items: { type: "string" } },
    sequence: { type: ["integer", "string"], pattern: "^-?[0-9]+$" },
    status: { type: ["string", "integer"], enum: ["STATUS_UNSPECIFIED", "ACTIVE", "BANNED"], title: "demo.user.v1.Status", "x-enum-numbers": [0, 1, 5], "x-enum-descriptions": ["", "Can sign in.", ""] },
    labels: { type: "object", additionalProperties: { type: "string" } },
    friends: { type: "array", items: { type: "object", $comment: "recursive demo.user.v1.User" } },
    avatar: { type: "string", contentEncoding: "base64" },
    ttl: { type: "string", pattern: "^-?[0-9.]+s$" },
    extra: { type: "object" },
    any: {},
    score: { type: "number" },
    count: { type: "integer" },
    uid: { type: "integer", format: "uint32", minimum: 0 },
    big: { type: ["integer", "string"], format: "uint64", pattern: "^[0-9]+$" },
    ok: { type: "boolean" },
  },
};
const response: JsonObject = {
  type: "object",
  title: "demo.user.v1.CreateUserResponse",
  additionalProperties: false,
  properties: {
    user,
    by_team: { type: "object", additionalProperties: user },
  },
};

describe("describeMessage", () => {
  const info = describeMessage(response);
  const u = info.fields[0];
  const byName = (n: string) => u.message!.fields.find((f) => f.name === n)!;

  it("reads nested messages with their titles and comments", () => {
    expect(info.title).toBe("demo.user.v1.CreateUserResponse");
    expect(u).toMatchObject({ name: "user", type: "demo.user.v1.User", kind: "message" });
    expect(u.message?.description).toBe("A user of the demo.");
    expect(byName("id")).toMatchObject({ type: "string", description: "Server-assigned id." });
  });

  it("names scalar, well-known, repeated and map types", () => {
    expect(byName("created_at").type).toBe("google.protobuf.Timestamp");
    expect(byName("roles")).toMatchObject({ type: "repeated string", repeated: true });
    expect(byName("sequence").type).toBe("int64");
    expect(byName("labels")).toMatchObject({ type: "map<string, string>", map: true });
    expect(byName("avatar").type).toBe("bytes");
    expect(byName("ttl").type).toBe("google.protobuf.Duration");
    expect(byName("extra").type).toBe("google.protobuf.Struct");
    expect(byName("any").type).toBe("google.protobuf.Value");
    expect(byName("score").type).toBe("double");
    expect(byName("count").type).toBe("int32");
    expect(byName("ok").type).toBe("bool");
    expect(byName("uid").type).toBe("uint32");
    expect(byName("big").type).toBe("uint64");
    expect(info.fields[1]).toMatchObject({ type: "map<string, demo.user.v1.User>", map: true, kind: "message" });
    expect(info.fields[1].message?.fields.length).toBe(16);
  });

  it("lists enum values and cuts recursion", () => {
    expect(byName("status")).toMatchObject({
      kind: "enum",
      type: "demo.user.v1.Status",
      enumValues: ["STATUS_UNSPECIFIED", "ACTIVE", "BANNED"],
      enumNumbers: [0, 1, 5],
      enumDescriptions: ["", "Can sign in.", ""],
    });
    expect(byName("friends")).toMatchObject({ kind: "recursive", type: "repeated demo.user.v1.User", repeated: true });
  });

  it("collects every field name for the search, and builds a request skeleton", () => {
    expect([...fieldNames(info)]).toEqual(expect.arrayContaining(["user", "by_team", "sequence", "status"]));
    const ex = example(info);
    expect(ex.user).toMatchObject({ id: "", roles: [""], status: "STATUS_UNSPECIFIED", sequence: "0", ok: false, count: 0 });
  });

  it("orders fields by their numbers when the schema gives them", () => {
    const m = describeMessage({
      type: "object",
      title: "x.Y",
      properties: { b: { type: "string", "x-field-number": 2 }, a: { type: "string", "x-field-number": 3 }, c: { type: "string", "x-field-number": 1 } },
    });
    expect(m.fields.map((f) => f.name)).toEqual(["c", "b", "a"]);
  });

  it("copes with a missing schema", () => {
    expect(describeMessage(undefined).fields).toEqual([]);
  });
});

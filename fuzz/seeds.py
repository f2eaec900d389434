#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target from real inputs (run from the repository root).

- document, register: every example pattern (patterns/*), the core tests' data documents, the
  documents written inline in the core compile tests (crates/core/tests/compile/*.rs), each as YAML
  and as JSON;
- cel_template: the `${{ }}` expressions of those documents and of the expression unit tests, one
  seed per expression (line 1: the template, rest: the JSON input);
- grpc_web: valid gRPC-Web requests (5-byte frame header + protobuf) for the health and
  reflection services, binary and base64 text.

Seeds are named by the SHA-1 of their content, like libFuzzer's own corpus entries, so writing
them twice changes nothing. `cargo fuzz cmin` afterwards keeps only those that add coverage.
"""

import base64
import glob
import hashlib
import json
import os
import re
import struct
import sys

import yaml


class Loader(yaml.SafeLoader):
    """YAML 1.2 booleans only: `on:` (a trigger list) is a key, not `true`."""


Loader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join("fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def documents():
    docs = []
    for path in sorted(glob.glob("patterns/*") + glob.glob("crates/core/tests/data/*.yaml")):
        with open(path) as f:
            docs.append(f.read())
    for path in sorted(glob.glob("crates/core/tests/compile/*.rs")):
        with open(path) as f:
            src = f.read()
        for block in re.findall(r'r#"(.*?)"#', src, re.S):
            # Documents, not the expected diagnostics next to them.
            if re.search(r"^\s*(name|steps|version):", block, re.M):
                docs.append(block.strip("\n") + "\n")
    return docs


def main():
    if not os.path.isdir("fuzz"):
        sys.exit("run from the repository root")
    expressions = set()
    for doc in documents():
        for target in ("document", "register"):
            write(target, doc)
        try:
            value = yaml.load(doc, Loader=Loader)
        except yaml.YAMLError:
            value = None
        if isinstance(value, dict):
            text = json.dumps(value, default=str)
            for target in ("document", "register"):
                write(target, text)
        expressions.update(re.findall(r"\$\{\{.*?\}\}", doc))
    with open("crates/core/src/expr.rs") as f:
        expressions.update(re.findall(r'\("((?:input|steps|item|event)\.[^"]*)"', f.read()))
    inputs = [
        {"email": "a@example.com", "name": "Ada", "avatar_url": "https://x/a.png", "user_id": "u-1"},
        {"xs": [1, 2, 3, 4], "m": {"a": 1, "b": 2}, "items": [{"price": 1.5}, {"price": 2}]},
    ]
    for i, e in enumerate(sorted(expressions)):
        write("cel_template", e + "\n" + json.dumps(inputs[i % 2]))
    write("cel_template", "Welcome ${{ input.name }}, ${{ input.xs.map(x, x * 2) }}!\n" + json.dumps(inputs[1]))

    def frame(message, flags=0):
        return bytes([flags]) + struct.pack(">I", len(message)) + message

    def pb_string(field, s):
        s = s.encode()
        return bytes([field << 3 | 2, len(s)]) + s

    trailer = frame(b"", 0x80)
    # (path index in grpc_web.rs's PATHS, request messages)
    requests = [
        (0, [b""]),  # HealthCheckRequest{}
        (0, [pb_string(1, "grpc.health.v1.Health")]),
        (1, [pb_string(7, "*")]),  # list_services
        (1, [pb_string(4, "nexus.v1.NexusService"), pb_string(3, "nexus/v1/nexus.proto")]),
        (2, [pb_string(7, "*"), pb_string(4, "grpc.health.v1.Health")]),
        (3, [b""]),
    ]
    for path, messages in requests:
        body = b"".join(frame(m) for m in messages)
        for ct in range(4):
            text = ct >= 2
            payload = base64.b64encode(body) if text else body
            choice = (path << 2) | ct
            write("grpc_web", bytes([choice, 0]) + payload)
            write("grpc_web", bytes([choice | 0x10, 3]) + payload)  # accept text, 3-byte chunks
        write("grpc_web", bytes([path << 2, 0]) + body + trailer)

    # connect_json: byte 0 picks the message (MESSAGES in connect_json.rs), then the JSON body.
    def connect(pick, body):
        write("connect_json", bytes([pick]) + (body if isinstance(body, str) else json.dumps(body)).encode())

    for i, doc in enumerate(documents()[:40]):
        try:
            value = yaml.load(doc, Loader=Loader)
        except yaml.YAMLError:
            continue
        if isinstance(value, dict) and isinstance(value.get("input"), dict):
            connect(0, {"patternName": value.get("name", "p"), "input": value["input"]})
    for body in [
        {"pattern_name": "user_creation", "version": "1.0.0",
         "input": {"email": "a@b.c", "n": 1, "x": -2.5, "ok": True, "none": None,
                   "list": [1, "two", None, False, {"deep": [[], {}]}]}, "idempotencyKey": "k"},
        {"input": {"zeros": [0, 0, 0, 0], "s": "\u00e9\n"}},
        {},
    ]:
        connect(0, body)
    connect(2, {"name": "p", "version": "1.0.0", "steps": [
        {"id": "a", "call": "x.Y/Z", "with": {"email": "${{ input.email }}"}, "timeout": "1.5s",
         "retry": {"maxAttempts": 3, "initialBackoff": "0.010s", "multiplier": 1.5, "retryOn": ["UNAVAILABLE"]},
         "dependsOn": ["b"], "forEach": "${{ input.xs }}", "concurrency": "4", "stream": True}]})
    connect(3, {"query": "user", "sort": "PATTERN_SORT_NAME", "pageSize": 10, "tag": "t"})
    connect(4, {"kinds": ["SUGGESTION_KIND_COMPOSITE", 3], "minConfidence": "NaN", "window": "600s"})
    connect(5, {"event": {"type": "user.created", "data": {"x": [1, 2]}, "time": "2026-12-02T10:00:00.123456789Z"}})
    connect(6, {"goal": "create a user and send a welcome email", "inputs": [{"name": "email", "type": "string"}], "limit": 3, "offline": True})
    connect(7, {})


main()

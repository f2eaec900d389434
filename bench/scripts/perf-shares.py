#!/usr/bin/env python3
"""Shares of a perf profile's samples whose call stack holds a frame (inclusive, by area).

Usage (see bench/README.md, "Profiling"):
    perf record -F 499 --call-graph dwarf,16384 -p "$(pgrep -f -- --serve-nexus)" -o perf.data -- sleep 6
    perf script -i perf.data > perf.txt
    python3 bench/scripts/perf-shares.py perf.txt                 # the default areas below
    python3 bench/scripts/perf-shares.py perf.txt 'History::insert' 'tonic::client'   # your own

An area is a regular expression matched against the stack's frames joined by " | "; an optional
exclusion after "!" drops the samples that also match it (e.g. a layer's own frames without the
service inside it: 'from_fn|access_log!NexusServiceServer').
"""
import re
import sys

AREAS = [
    ("backend connections' h2 tasks", r"invoker::Connection::handshake"),
    ("the incoming connection (hyper's server)", r"hyper::proto::h2::server::Serving<"),
    ("engine, outside the invoker", r"Run::|Engine::run!GrpcInvoker|invoker::call"),
    ("the invoker's calls", r"GrpcInvoker as nexus_engine"),
    ("middleware frames (routing, from_fn, access log)",
     r"from_fn|map_response|access_log|auth::middleware|axum::routing!NexusServiceServer|tonic::server"),
    ("responses to CEL", r"payload_to_cel"),
    ("History::insert", r"History::insert"),
    ("allocator (mimalloc)", r"_mi_|mi_free|mi_malloc"),
]


def stacks(path):
    with open(path, errors="replace") as f:
        for block in f.read().split("\n\n"):
            lines = [l.strip() for l in block.strip().split("\n")[1:] if l.strip()]
            if lines:
                yield " | ".join(re.sub(r"\+0x[0-9a-f]+.*", "", re.sub(r"^[0-9a-f]+ ", "", l)) for l in lines)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    samples = list(stacks(sys.argv[1]))
    if not samples:
        sys.exit(f"{sys.argv[1]}: no samples (is it `perf script` output?)")
    areas = [(a, a) for a in sys.argv[2:]] or AREAS
    print(f"{len(samples)} samples")
    for name, spec in areas:
        include, _, exclude = spec.partition("!")
        inc, exc = re.compile(include), re.compile(exclude) if exclude else None
        n = sum(1 for s in samples if inc.search(s) and not (exc and exc.search(s)))
        print(f"{100 * n / len(samples):6.1f} %  {name}")


if __name__ == "__main__":
    main()

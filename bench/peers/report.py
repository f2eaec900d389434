"""Writes the peer benchmark's result: the table, what was measured, on what, with which versions.

    python3 report.py RESULTS.jsonl OUT.txt

RESULTS.jsonl holds one object per system: a driver's result (measure.js / measure.py) or
{"system", "ok": false, "error"}. The rest comes from the environment bench.sh sets
(PEERS_VERSIONS, PEERS_NETNS_NOTE, NEXUS_BIN, PEERS_RUNS, ...). Prints what it writes.
Standard library only: it runs with the system's python3 even when the venv failed to install.
"""

import datetime
import json
import os
import platform
import re
import sys

COLUMNS = ["system", "p50 ms", "p99 ms", "runs/s @{c}", "CPU ms/run", "RSS MiB"]


def read_results(path):
    results = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    results.append(json.loads(line))
    except FileNotFoundError:
        pass
    return results


def fmt(value, digits):
    return "–" if value is None else f"{value:,.{digits}f}"


def table(results, concurrency):
    header = [c.format(c=concurrency) for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in results:
        if r.get("ok"):
            cells = [
                r["system"] + (f" ({r['errors']} failed runs)" if r.get("errors") else ""),
                fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2),
                fmt(r["runs_per_s"], 1),
                fmt(r["cpu_ms_per_run"], 2),
                fmt(r["rss_mib"], 1),
            ]
        else:
            cells = [r["system"], "FAILED (see below)", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine():
    model, mem_kib = "unknown CPU", 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            model = match.group(1).strip() if match else model
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kib = int(re.search(r"^MemTotal:\s+(\d+)", f.read(), re.M).group(1))
    except (OSError, AttributeError):
        pass
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"{mem_kib / 1048576:.1f} GiB; Linux {platform.release()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )


def main():
    results_path, out_path = sys.argv[1], sys.argv[2]
    results = read_results(results_path)
    env = os.environ.get
    concurrency = env("PEERS_CONCURRENCY", "8")
    nexus_bin = env("NEXUS_BIN", "")

    out = [
        "# Peer benchmark (bench/peers/run.sh)",
        "",
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {machine()}",
        f"settings: one run = 3 chained Echo calls to one grpc-js backend; {env('PEERS_WARMUP')} warm-up runs, "
        f"{env('PEERS_RUNS')} sequential runs (p50, p99), {concurrency} concurrent clients for "
        f"{env('PEERS_SECONDS')} s (runs/s, CPU per run), RSS after",
        f"network: {env('PEERS_NETNS_NOTE', '')}",
    ]
    if "/debug/" in nexus_bin:
        out.append(f"NOTE: Nexus is a debug build ({nexus_bin}): its figures mean nothing.")
    out += ["", *table(results, concurrency), ""]

    out.append("Processes whose CPU and RSS are counted (the backend is in none):")
    for r in results:
        if r.get("ok"):
            names = ", ".join(p.split(":", 1)[1] for p in r.get("processes", []))
            out.append(f"- {r['system']}: {names}")
    failures = [r for r in results if not r.get("ok")]
    errors = [r for r in results if r.get("ok") and r.get("errors")]
    if failures or errors:
        out += ["", "Failures:"]
        out += [f"- {r['system']}: {r.get('error')}" for r in failures]
        out += [f"- {r['system']}: {r['errors']} failed runs; the first: {r['first_error']}" for r in errors]
    out += ["", "Versions:", *[f"- {v}" for v in env("PEERS_VERSIONS", "").splitlines() if v.strip()]]
    out += ["", "Raw results (JSON, one per system):", *[json.dumps(r) for r in results]]

    text = "\n".join(out) + "\n"
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0 if results and not failures else 1


if __name__ == "__main__":
    sys.exit(main())

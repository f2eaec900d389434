"""The measurement of the peer benchmark, for the Python (Temporal) driver.

measure.js is the same logic for the Node driver: change one, change the other.

For one system, given `run` (one whole run: three chained echo calls, checked):
  1. warm-up: `warmup` sequential runs, every one must succeed;
  2. latency: `runs` sequential runs, each timed from before the request to the checked answer
     -> p50, p99 (nearest rank), mean;
  3. throughput: `concurrency` clients in this process, each starting a run as soon as its
     previous one ended, until `seconds` have passed -> completed runs / elapsed time (up to the
     end of the last run);
  4. CPU per run: utime + stime (/proc/PID/stat) of the system's processes -- the PIDs given and
     all their descendants -- summed over the throughput phase, / the runs it completed;
  5. RSS: VmRSS (/proc/PID/status) of the same processes, summed, right after phase 3.
"""

import argparse
import asyncio
import math
import os
import re
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args(argv, systems):
    """The same options as measure.js's parseArgs (--run-timeout-ms, ...)."""
    parser = argparse.ArgumentParser(description="peer benchmark driver")
    parser.add_argument("--system", required=True, choices=systems)
    parser.add_argument("--label", default="")
    parser.add_argument("--target", required=True)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pids", default="self")
    parser.add_argument("--run-timeout-ms", type=int, default=30000)
    parser.add_argument("--max-errors", type=int, default=50)
    opts = parser.parse_args(argv)
    opts.label = opts.label or opts.system
    return opts


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name: [1] ppid, [11] utime, [12] stime."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return None  # gone
    return stat[stat.rindex(")") + 2 :].split(" ")


def process_tree(roots):
    """The roots and every live descendant of theirs."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree = []
    queue = [pid for pid in roots if _stat_fields(pid)]
    while queue:
        pid = queue.pop(0)
        if pid in tree:
            continue
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def cpu_ticks(pids):
    ticks = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="utf-8") as f:
                match = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
        except OSError:
            continue  # gone
        if match:
            total += int(match.group(1))
    return total


def process_names(pids):
    names = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                names.append(f"{pid}:{f.read().strip()}")
        except OSError:
            names.append(f"{pid}:?")
    return names


def percentile(sorted_values, p):
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(p * len(sorted_values)) - 1))
    return sorted_values[index]


def _round(x, digits=3):
    """round(), with None for NaN (JSON has no NaN; JSON.stringify writes null too)."""
    return None if x is None or math.isnan(x) else round(x, digits)


def _now_ms():
    return time.perf_counter_ns() / 1e6


class TooManyErrors(Exception):
    pass


async def measure(run, opts):
    roots = [os.getpid()] if opts.pids == "self" else [int(p) for p in opts.pids.split(",")]
    errors = {"count": 0, "first": None}

    def failed(err):
        errors["count"] += 1
        if errors["first"] is None:
            errors["first"] = str(err) or type(err).__name__
        if errors["count"] > opts.max_errors:
            raise TooManyErrors(f"more than {opts.max_errors} failed runs; the first: {errors['first']}")

    for i in range(opts.warmup):
        try:
            await run()
        except Exception as err:  # noqa: BLE001 -- any failure of the system under test
            raise RuntimeError(f"warm-up run {i + 1} failed: {err}") from err
    print(f"{opts.label}: warm-up done ({opts.warmup} runs); {opts.runs} sequential runs", file=sys.stderr)

    latencies = []
    for _ in range(opts.runs):
        start = _now_ms()
        try:
            await run()
            latencies.append(_now_ms() - start)
        except Exception as err:  # noqa: BLE001
            failed(err)
    latencies.sort()
    print(f"{opts.label}: {opts.concurrency} concurrent clients for {opts.seconds:g} s", file=sys.stderr)

    before = cpu_ticks(process_tree(roots))
    start = _now_ms()
    deadline = start + opts.seconds * 1000
    state = {"completed": 0, "stop": None}  # stop: the error that ends the phase early

    async def client():
        while state["stop"] is None and _now_ms() < deadline:
            try:
                await run()
                state["completed"] += 1
            except Exception as err:  # noqa: BLE001
                try:
                    failed(err)
                except TooManyErrors as fatal:
                    state["stop"] = fatal

    await asyncio.gather(*(client() for _ in range(opts.concurrency)))
    elapsed = (_now_ms() - start) / 1000
    if state["stop"] is not None:
        raise state["stop"]
    tree = process_tree(roots)
    after = cpu_ticks(tree)
    rss = rss_kib(tree)
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())  # a process started since counts whole
    cpu_ms = ticks * 1000 / CLK_TCK
    completed = state["completed"]

    mean = sum(latencies) / (len(latencies) or 1)
    return {
        "system": opts.label,
        "ok": True,
        "warmup": opts.warmup,
        "runs": len(latencies),
        "p50_ms": _round(percentile(latencies, 0.5)),
        "p99_ms": _round(percentile(latencies, 0.99)),
        "mean_ms": round(mean, 3),
        "concurrency": opts.concurrency,
        "concurrent_runs": completed,
        "concurrent_seconds": round(elapsed, 3),
        "runs_per_s": round(completed / elapsed, 1),
        "cpu_ms_per_run": round(cpu_ms / completed, 3) if completed else None,
        "cpu_percent_of_a_core": round(cpu_ms / 10 / elapsed, 1),
        "rss_mib": round(rss / 1024, 1),
        "processes": process_names(tree),
        "errors": errors["count"],
        "first_error": errors["first"],
    }

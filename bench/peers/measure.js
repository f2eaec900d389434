// The measurement of the peer benchmark, for the Node driver (driver.js). measure.py is the same
// logic in Python for the Temporal driver: change one, change the other.
//
// For one system, given `run` (one whole run: three chained echo calls, checked):
//   1. warm-up: `warmup` sequential runs, every one must succeed;
//   2. latency: `runs` sequential runs, each timed from before the request to the checked answer
//      → p50, p99 (nearest rank), mean;
//   3. throughput: `concurrency` clients in this process, each starting a run as soon as its
//      previous one ended, until `seconds` have passed → completed runs / elapsed time (up to
//      the end of the last run);
//   4. CPU per run: utime + stime (/proc/PID/stat) of the system's processes — the PIDs given
//      and all their descendants — summed over the throughput phase, / the runs it completed;
//   5. RSS: VmRSS (/proc/PID/status) of the same processes, summed, right after phase 3.
'use strict';

const fs = require('fs');
const { execFileSync } = require('child_process');

const DEFAULTS = {
  system: '',
  label: '',
  target: '',
  pattern: '',
  warmup: 100,
  runs: 500,
  concurrency: 8,
  seconds: 10,
  pids: 'self',
  runTimeoutMs: 30000,
  maxErrors: 50,
};

// `--run-timeout-ms 5` → { runTimeoutMs: 5 }; numbers for the options whose default is one.
function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    if (!flag.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${flag}`);
    const key = flag.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in DEFAULTS)) throw new Error(`unknown option ${flag}`);
    const value = argv[i + 1];
    opts[key] = typeof DEFAULTS[key] === 'number' ? Number(value) : value;
    if (typeof DEFAULTS[key] === 'number' && !Number.isFinite(opts[key])) throw new Error(`${flag} wants a number`);
  }
  if (!opts.label) opts.label = opts.system;
  return opts;
}

// Clock ticks per second of /proc/PID/stat's utime and stime.
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

// The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses):
// [0] is field 3 (state), [1] field 4 (ppid), [11] field 14 (utime), [12] field 15 (stime).
function statFields(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch (err) {
    return null; // gone
  }
}

// The roots and every live descendant of theirs.
function processTree(roots) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(entry);
    if (!fields) continue;
    const ppid = Number(fields[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(Number(entry));
  }
  const tree = new Set();
  const queue = roots.filter((pid) => statFields(pid));
  while (queue.length) {
    const pid = queue.shift();
    if (tree.has(pid)) continue;
    tree.add(pid);
    queue.push(...(children.get(pid) || []));
  }
  return [...tree];
}

function cpuTicks(pids) {
  const ticks = new Map();
  for (const pid of pids) {
    const fields = statFields(pid);
    if (fields) ticks.set(pid, Number(fields[11]) + Number(fields[12]));
  }
  return ticks;
}

function rssKiB(pids) {
  let total = 0;
  for (const pid of pids) {
    try {
      const match = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (match) total += Number(match[1]);
    } catch (err) {
      // gone
    }
  }
  return total;
}

function processNames(pids) {
  return pids.map((pid) => {
    try {
      return `${pid}:${fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()}`;
    } catch (err) {
      return `${pid}:?`;
    }
  });
}

// Nearest-rank percentile of sorted values.
function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const round = (x, digits) => Number(x.toFixed(digits));

async function measure(run, opts) {
  const roots = opts.pids === 'self' ? [process.pid] : opts.pids.split(',').map(Number);
  const errors = { count: 0, first: null };
  const failed = (err) => {
    errors.count += 1;
    if (!errors.first) errors.first = err.message || String(err);
    if (errors.count > opts.maxErrors) {
      throw new Error(`more than ${opts.maxErrors} failed runs; the first: ${errors.first}`);
    }
  };

  for (let i = 0; i < opts.warmup; i += 1) {
    try {
      await run();
    } catch (err) {
      throw new Error(`warm-up run ${i + 1} failed: ${err.message || err}`);
    }
  }
  console.error(`${opts.label}: warm-up done (${opts.warmup} runs); ${opts.runs} sequential runs`);

  const latencies = [];
  for (let i = 0; i < opts.runs; i += 1) {
    const start = nowMs();
    try {
      await run();
      latencies.push(nowMs() - start);
    } catch (err) {
      failed(err);
    }
  }
  latencies.sort((a, b) => a - b);
  console.error(`${opts.label}: ${opts.concurrency} concurrent clients for ${opts.seconds} s`);

  const before = cpuTicks(processTree(roots));
  const start = nowMs();
  const deadline = start + opts.seconds * 1000;
  let completed = 0;
  let stop = null; // the error that ends the phase early
  const client = async () => {
    while (!stop && nowMs() < deadline) {
      try {
        await run();
        completed += 1;
      } catch (err) {
        try {
          failed(err);
        } catch (fatal) {
          stop = fatal;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, client));
  const elapsed = (nowMs() - start) / 1000;
  if (stop) throw stop;
  const tree = processTree(roots);
  const after = cpuTicks(tree);
  const rss = rssKiB(tree);
  let ticks = 0;
  for (const [pid, t] of after) ticks += t - (before.get(pid) || 0); // a process started since counts whole
  const cpuMs = (ticks * 1000) / CLK_TCK;

  const mean = latencies.reduce((a, b) => a + b, 0) / (latencies.length || 1);
  return {
    system: opts.label,
    ok: true,
    warmup: opts.warmup,
    runs: latencies.length,
    p50_ms: round(percentile(latencies, 0.5), 3),
    p99_ms: round(percentile(latencies, 0.99), 3),
    mean_ms: round(mean, 3),
    concurrency: opts.concurrency,
    concurrent_runs: completed,
    concurrent_seconds: round(elapsed, 3),
    runs_per_s: round(completed / elapsed, 1),
    cpu_ms_per_run: completed ? round(cpuMs / completed, 3) : null,
    cpu_percent_of_a_core: round((cpuMs / 10) / elapsed, 1),
    rss_mib: round(rss / 1024, 1),
    processes: processNames(tree),
    errors: errors.count,
    first_error: errors.first,
  };
}

module.exports = { measure, parseArgs, percentile };

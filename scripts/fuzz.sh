#!/usr/bin/env bash
# Coverage-guided fuzzing of Nexus's parsers with cargo-fuzz (libFuzzer + AddressSanitizer).
# See fuzz/README.md for what each target checks.
#
#   bash scripts/fuzz.sh smoke [SECONDS]  CI: build, then run each target SECONDS (default 10) on
#                                         its corpus; new inputs go to a temporary directory
#   bash scripts/fuzz.sh run [RUNS] [MAX_SECONDS]
#                                         RUNS executions per target (default 1000000), or fewer
#                                         if MAX_SECONDS (per target) come first; new corpus
#                                         entries kept in fuzz/corpus/<target>; summary table
#   bash scripts/fuzz.sh cmin             minimize fuzz/corpus/<target> of every target (after run)
#   bash scripts/fuzz.sh list             the targets
#
# Every mode fails on a crash (panic, sanitizer report), a timeout (an input that runs > 1 s) or
# an out-of-memory (> 512 MiB RSS, or one allocation > 512 MiB), and prints the artifact and how
# to reproduce it. TARGETS="a b" restricts to some targets; FUZZ_SANITIZER=none builds without
# ASan (faster build and runs; the default is address); FUZZ_PROFILE=dev builds fuzz/Cargo.toml's
# dev profile (opt-level 1: a few minutes instead of ~10, for the CI smoke; the default is
# release). Needs the nightly toolchain (rustup);
# installs cargo-fuzz when it is missing. Run from anywhere: it works in the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=fuzz
SANITIZER="${FUZZ_SANITIZER:-address}"
PROFILE="${FUZZ_PROFILE:-release}"
case "$PROFILE" in
  release) PROFILE_FLAG=-O PROFILE_DIR=release ;;
  dev) PROFILE_FLAG=--dev PROFILE_DIR=debug ;;
  *) echo "error: FUZZ_PROFILE is release or dev, not $PROFILE" >&2; exit 2 ;;
esac
RSS_LIMIT_MB=512
TIMEOUT_S=1
# ASan keeps freed memory in a quarantine (256 MB by default) to catch use-after-free: that alone
# took `register` and `cel_template` over the 512 MiB limit (their live heap is ~40 MB). 16 MB
# still catches recent use-after-free. Options given in ASAN_OPTIONS come after, so they win.
export ASAN_OPTIONS="quarantine_size_mb=16${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

usage() {
  sed -n '4,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

# The largest input each target is given (-max_len). Small and fixed, so that runs are comparable
# and the fuzzer spends its time on structure rather than on size: documents and gRPC-Web bodies
# of 64 KiB hold hundreds of steps or frames (the document parser's own limit, 1 MiB, is a plain
# length check), and a CEL source is limited to 4 KiB by `expr::MAX_EXPRESSION_BYTES` anyway.
max_len() {
  case "$1" in
    cel_template) echo 4096 ;;
    document | register | grpc_web | connect_json) echo 65536 ;;
    *) echo 65536 ;;
  esac
}

need_tools() {
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "error: the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
}

# The targets: the [[bin]]s of fuzz/Cargo.toml (what `cargo fuzz list` prints), so a target added
# with its file and its [[bin]] entry (connect_json) is picked up. TARGETS overrides.
targets() {
  if [[ -n "${TARGETS:-}" ]]; then
    echo "$TARGETS" | tr ' ' '\n'
    return
  fi
  cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR"
}

check_sources() {
  local f name bins
  bins="$(cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR")"
  for f in "$FUZZ_DIR"/fuzz_targets/*.rs; do
    name="$(basename "$f" .rs)"
    if ! grep -qx "$name" <<<"$bins"; then
      echo "warning: $f has no [[bin]] in $FUZZ_DIR/Cargo.toml: not fuzzed" >&2
    fi
  done
}

build() {
  echo "== cargo +nightly fuzz build (sanitizer: $SANITIZER, profile: $PROFILE)"
  local start=$SECONDS
  cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" "$PROFILE_FLAG" --sanitizer "$SANITIZER"
  echo "   built in $((SECONDS - start)) s"
}

binary() {
  local triple
  triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
  echo "$FUZZ_DIR/target/$triple/$PROFILE_DIR/$1"
}

# The findings libFuzzer wrote during this run (artifacts newer than the marker file).
report_findings() {
  local target="$1" marker="$2" log="$3" found=0 a
  while IFS= read -r a; do
    [[ -z "$a" ]] && continue
    found=1
    echo "!! $target: finding $a" >&2
  done < <(find "$FUZZ_DIR/artifacts/$target" -type f -newer "$marker" 2>/dev/null | sort)
  echo "--- last lines of the log ($log) ---" >&2
  grep -E "panicked at|ERROR: |SUMMARY: |Test unit written|==[0-9]+==" "$log" | head -20 >&2 || true
  tail -n 40 "$log" >&2
  cat >&2 <<EOF
--- to reproduce (from the repository root) ---
  cargo +nightly fuzz run --fuzz-dir $FUZZ_DIR $target <artifact>
  # or the binary itself:  $(binary "$target") <artifact>
  # a smaller input:       cargo +nightly fuzz tmin --fuzz-dir $FUZZ_DIR $target <artifact>
  # keep the reproducer:   mkdir -p $FUZZ_DIR/regressions/$target && cp <artifact> $FUZZ_DIR/regressions/$target/
EOF
  [[ $found -eq 1 ]] || echo "!! $target: libFuzzer failed without an artifact (see the log)" >&2
}

# fuzz TARGET LOG [libFuzzer options and corpus dirs...]: runs one target, returns its status.
fuzz() {
  local target="$1" log="$2"
  shift 2
  local bin marker
  bin="$(binary "$target")"
  mkdir -p "$FUZZ_DIR/artifacts/$target" "$FUZZ_DIR/corpus/$target"
  marker="$(mktemp)"
  local status=0
  "$bin" -rss_limit_mb=$RSS_LIMIT_MB -malloc_limit_mb=$RSS_LIMIT_MB -timeout=$TIMEOUT_S \
    -max_len="$(max_len "$target")" -print_final_stats=1 \
    -artifact_prefix="$FUZZ_DIR/artifacts/$target/" "$@" >"$log" 2>&1 || status=$?
  if [[ $status -ne 0 ]]; then
    report_findings "$target" "$marker" "$log"
  fi
  rm -f "$marker"
  return $status
}

stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

# cov/ft of the last status line (`#N DONE cov: X ft: Y corp: ...`).
last_field() { grep -E "^#[0-9]+" "$2" | tail -1 | sed -n "s/.* $1: \([0-9]*\).*/\1/p"; }

summary_row() {
  local target="$1" log="$2" wall="$3"
  printf "%-14s %12s %10s %8s %8s %8s %10s %6s %s\n" "$target" \
    "$(stat number_of_executed_units "$log")" "$(stat average_exec_per_sec "$log")" \
    "$(last_field cov "$log")" "$(last_field ft "$log")" "$(stat new_units_added "$log")" \
    "$(stat slowest_unit_time_sec "$log")" "$(stat peak_rss_mb "$log")" "${wall}s"
}

header() {
  printf "%-14s %12s %10s %8s %8s %8s %10s %6s %s\n" target execs execs/s cov ft new_units slowest_s rss_mb wall
}

mode="${1:-}"
[[ -n "$mode" ]] || usage
case "$mode" in
  smoke | run | cmin | list) ;;
  *) usage ;;
esac

need_tools
ALL_TARGETS="$(targets)"
if [[ "$mode" == list ]]; then
  echo "$ALL_TARGETS"
  exit 0
fi
check_sources

logs="$(mktemp -d)"
failed=()
rows=()

case "$mode" in
  smoke)
    seconds="${2:-10}"
    build
    for t in $ALL_TARGETS; do
      echo "== smoke $t (${seconds} s)"
      # New inputs go to a scratch directory (first corpus dir); the repository's corpus is read.
      scratch="$(mktemp -d)"
      start=$SECONDS
      if fuzz "$t" "$logs/$t.log" -max_total_time="$seconds" "$scratch" "$FUZZ_DIR/corpus/$t"; then
        rows+=("$(summary_row "$t" "$logs/$t.log" $((SECONDS - start)))")
      else
        failed+=("$t")
      fi
      rm -rf "$scratch"
    done
    ;;
  run)
    runs="${2:-1000000}"
    limit=()
    [[ -n "${3:-}" ]] && limit=(-max_total_time="$3")
    build
    for t in $ALL_TARGETS; do
      echo "== run $t ($runs executions${3:+, at most $3 s})"
      start=$SECONDS
      before="$(find "$FUZZ_DIR/corpus/$t" -type f 2>/dev/null | wc -l)"
      if fuzz "$t" "$logs/$t.log" -runs="$runs" "${limit[@]}" "$FUZZ_DIR/corpus/$t"; then
        row="$(summary_row "$t" "$logs/$t.log" $((SECONDS - start)))"
        rows+=("$row")
        header
        echo "$row"
        echo "   corpus: $before -> $(find "$FUZZ_DIR/corpus/$t" -type f | wc -l) files; log: $logs/$t.log"
      else
        failed+=("$t")
      fi
    done
    ;;
  cmin)
    for t in $ALL_TARGETS; do
      echo "== cmin $t"
      before="$(du -sb "$FUZZ_DIR/corpus/$t" | cut -f1)"
      cargo +nightly fuzz cmin --fuzz-dir "$FUZZ_DIR" "$PROFILE_FLAG" --sanitizer "$SANITIZER" "$t" "$FUZZ_DIR/corpus/$t" -- \
        -max_len="$(max_len "$t")" -rss_limit_mb=$RSS_LIMIT_MB -timeout=$TIMEOUT_S >"$logs/$t.log" 2>&1 ||
        { tail -n 30 "$logs/$t.log" >&2; failed+=("$t"); continue; }
      echo "   $t: $before -> $(du -sb "$FUZZ_DIR/corpus/$t" | cut -f1) bytes, $(find "$FUZZ_DIR/corpus/$t" -type f | wc -l) files"
    done
    ;;
esac

if [[ ${#rows[@]} -gt 0 ]]; then
  echo
  echo "== summary ($mode, $(date -u +%Y-%m-%dT%H:%MZ))"
  header
  printf "%s\n" "${rows[@]}"
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED: ${failed[*]} (logs in $logs)" >&2
  exit 1
fi
rm -rf "$logs"
echo "ok: no crash, no timeout (> ${TIMEOUT_S} s), no out-of-memory (> ${RSS_LIMIT_MB} MiB)"

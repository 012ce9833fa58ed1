#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (libFuzzer through cargo-fuzz) for a
# bounded time and prints, per target, the executions, the seconds and what
# it found.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60, every target)
#
# Each target starts from the seed corpus that fuzz/examples/seeds.rs writes
# (real, valid inputs made with the project's code and configs/) plus the
# inputs kept under {protocol,node}/tests/fuzz-regressions/<target>/, and
# grows its working corpus in fuzz/corpus/<target>/ (not committed). An
# input that crashes a target, times out or runs out of memory is copied into
# that regression directory, where `cargo test` replays it from then on:
# fix the decoder, and the test that replays it passes.
#
# Environment: FUZZ_SANITIZER (default none: safe Rust needs no ASan and runs
# about twice as fast; address also works), FUZZ_JOBS (default 1),
# CARGO_FUZZ_ARGS (extra arguments for `cargo fuzz build/run`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
case "$seconds" in
  ''|*[!0-9]*) echo "error: SECONDS_PER_TARGET must be a whole number, got '$seconds'" >&2; exit 2 ;;
esac

# cargo-fuzz passes nightly-only flags to rustc; the stable toolchain takes
# them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"
read -r -a extra <<<"${CARGO_FUZZ_ARGS:-}"
parallel=()
if [ "$jobs" -gt 1 ]; then
  parallel=(-jobs="$jobs" -workers="$jobs")
fi
build=(--fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions "${extra[@]}")

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

regression_dir() {
  case "$1" in
    wire|envelope|record|checkpoint|export) echo "protocol/tests/fuzz-regressions/$1" ;;
    *) echo "node/tests/fuzz-regressions/$1" ;;
  esac
}

echo "writing seed corpora to fuzz/corpus"
cargo run -q --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus
echo "building ${#targets[@]} targets (sanitizer: $sanitizer)"
cargo fuzz build "${build[@]}"

mkdir -p fuzz/logs
summary=()
failed=0
for t in "${targets[@]}"; do
  regress="$(regression_dir "$t")"
  mkdir -p "fuzz/corpus/$t" "$regress" "fuzz/artifacts/$t"
  # Findings of earlier runs were copied to the regression directory already.
  rm -f "fuzz/artifacts/$t"/*
  log="fuzz/logs/$t.log"
  echo "== $t: ${seconds}s"
  start=$(date +%s)
  set +e
  cargo fuzz run "${build[@]}" "$t" "fuzz/corpus/$t" "$regress" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${parallel[@]}" >"$log" 2>&1
  status=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  # Executions: the final stats of every worker, else the last status line.
  execs=$({ cat "$log"; cat fuzz/fuzz-*.log 2>/dev/null || true; } | awk '/stat::number_of_executed_units:/ {s += $2} END {print s + 0}')
  if [ "$execs" = 0 ]; then
    execs=$(awk '/^#[0-9]+/ {n = substr($1, 2)} END {print n + 0}' "$log")
  fi
  found=0
  for artifact in "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/timeout-* "fuzz/artifacts/$t"/oom-* "fuzz/artifacts/$t"/leak-*; do
    [ -e "$artifact" ] || continue
    cp "$artifact" "$regress/"
    found=$((found + 1))
    echo "   found $(basename "$artifact"), kept as $regress/$(basename "$artifact")"
  done
  rm -f fuzz/fuzz-*.log fuzz-*.log
  if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
    failed=1
    grep -m 3 -E 'panicked at|ERROR|SUMMARY' "$log" | sed 's/^/   /' || true
  fi
  summary+=("$(printf '%-12s %12s execs %6ss %8s/s  %s' "$t" "${execs:-0}" "$elapsed" \
    "$(( ${execs:-0} / (elapsed > 0 ? elapsed : 1) ))" \
    "$([ "$found" -gt 0 ] && echo "$found found" || ([ "$status" -ne 0 ] && echo "exit $status" || echo ok))")")
done

echo
printf '%-12s %18s %7s %10s  %s\n' target executions time rate result
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzzing found problems: see fuzz/logs/ and the inputs copied into the regression directories" >&2
  exit 1
fi

#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_<name>.cpp) in build-sanitize (the `sanitize`
# preset: clang, ASan + UBSan), replays tests/fuzz/regressions/<name>/ (inputs that once crashed),
# then fuzzes each target for SECONDS on a scratch copy of tests/fuzz/corpus/<name>/ (the
# repository's corpus is never modified), FUZZ_JOBS targets at a time (default: the core count).
# Prints executions and findings per target; exits non-zero on any finding.
#   tools/fuzz.sh [SECONDS] [NAME...]      default 30 s, every target
# Crashing inputs are kept in build-sanitize/findings/<name>/; once fixed, copy them into
# tests/fuzz/regressions/<name>/.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${DISTILL_FUZZ_BUILD:-$root/build-sanitize}"
seconds="${1:-30}"
shift || true
parallel="${FUZZ_JOBS:-$(nproc)}"

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  (cd "$root" && cmake --preset sanitize -B "$build" >/dev/null) || exit 1
fi
cmake --build "$build" --target distill_fuzz -j"$(nproc)" >"$build/fuzz_build.log" 2>&1 || {
  tail -n 40 "$build/fuzz_build.log"
  echo "fuzz.sh: build failed (log: $build/fuzz_build.log)"
  exit 1
}

# Longest input per target: big enough for its seeds (tar shards pad to 10 KB, CIFAR records are
# 3 KB), small enough to keep executions fast.
max_len() {
  case "$1" in
    tar) echo 12288 ;;
    cifar) echo 8192 ;;
    image) echo 8192 ;;
    tokenizer) echo 2048 ;;
    *) echo 4096 ;;
  esac
}

names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
  for src in "$root"/tests/fuzz/fuzz_*.cpp; do
    n="$(basename "$src" .cpp)"
    names+=("${n#fuzz_}")
  done
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# One target: replay its regressions, fuzz it, write its table row to $work/$name.row and exit
# non-zero on a finding. Runs in the background, FUZZ_JOBS at a time.
fuzz_one() {
  local name="$1" bin="$build/fuzz_$1"
  local row="$work/$name.row"
  [[ -x "$bin" ]] || { echo "fuzz.sh: no target $bin" >"$row"; return 1; }
  # -rss_limit_mb also caps single allocations: a size field that makes a parser ask for
  # gigabytes is reported as a finding.
  local opts=(-rss_limit_mb=2048 -timeout=20 -max_len="$(max_len "$name")")
  local regress="$root/tests/fuzz/regressions/$name"
  if compgen -G "$regress/*" >/dev/null; then
    if ! "$bin" "${opts[@]}" "$regress"/* >"$work/$name.replay.log" 2>&1; then
      { tail -n 30 "$work/$name.replay.log"
        printf '%-20s %10s %8s %s\n' "$name" - - "REGRESSION (replaying $regress)"; } >"$row"
      return 1
    fi
  fi
  mkdir -p "$work/$name/corpus" "$work/$name/artifacts"
  cp -r "$root/tests/fuzz/corpus/$name/." "$work/$name/corpus/" 2>/dev/null
  local start rc elapsed execs slow=""
  start=$(date +%s)
  "$bin" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$work/$name/artifacts/" "$work/$name/corpus" >"$work/$name.log" 2>&1
  rc=$?
  elapsed=$(($(date +%s) - start))
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$')"
  # slow-unit-* files are only notes (an input over 10 s under the sanitizers), not failures.
  if compgen -G "$work/$name/artifacts/slow-unit-*" >/dev/null; then
    mkdir -p "$build/findings/$name"
    cp "$work/$name/artifacts/"slow-unit-* "$build/findings/$name/"
    slow=" (slow inputs kept in $build/findings/$name)"
  fi
  if [[ $rc -eq 0 ]] && ! compgen -G "$work/$name/artifacts/[!s]*" >/dev/null; then
    printf '%-20s %10s %8s %s\n' "$name" "${execs:-?}" "$elapsed" "ok$slow" >"$row"
    return 0
  fi
  mkdir -p "$build/findings/$name"
  cp "$work/$name/artifacts/"* "$build/findings/$name/" 2>/dev/null
  cp "$work/$name.log" "$build/findings/$name/fuzz.log"
  { grep -m1 -E 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error' "$work/$name.log"
    printf '%-20s %10s %8s %s\n' "$name" "${execs:-?}" "$elapsed" \
      "FINDING (rc $rc; inputs and log in $build/findings/$name)"; } >"$row"
  return 1
}

status=0
for name in "${names[@]}"; do
  while (($(jobs -rp | wc -l) >= parallel)); do wait -n || status=1; done
  fuzz_one "$name" &
done
while (($(jobs -rp | wc -l) > 0)); do wait -n || status=1; done
printf '%-20s %10s %8s %s\n' target executions seconds result
for name in "${names[@]}"; do cat "$work/$name.row" 2>/dev/null || echo "$name: no result"; done
exit $status

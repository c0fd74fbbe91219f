#!/usr/bin/env bash
# run-fuzzers.sh - build the libFuzzer targets with clang and run them.
#
# Usage: bash tests/fuzz/run-fuzzers.sh [-t SECONDS] [-j JOBS] [TARGET...]
#
#   -t SECONDS  how long each target runs (default 600)
#   -j JOBS     targets run at the same time (default 2)
#   TARGET      fuzz_line fuzz_reply ... (default: every target)
#
# Builds into build-fuzz/ (-DENABLE_FUZZERS=ON, clang, ASan + UBSan +
# libFuzzer).  Each target works in $FUZZ_WORK/<target>/ (default
# /tmp/starttls-proxy-fuzz): corpus/ starts as a copy of the repository's
# seed corpus and grows there (the repository corpus is never written),
# crashers land in artifacts/, the log in log.txt.  At the end one line
# per target: seconds, executions, coverage, corpus size, crashers.
# Exit status 1 when any target found something.
#
# A crasher is replayed (and minimised) with the same binary:
#   build-fuzz/tests/fuzz/<target> <crash-file>
#   build-fuzz/tests/fuzz/<target> -minimize_crash=1 -runs=10000 <crash-file>
# and, once fixed, belongs in tests/fuzz/corpus/<target>/ so that ctest
# replays it.
set -euo pipefail

secs=600
jobs=2
while getopts "t:j:h" opt; do
  case $opt in
    t) secs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_line fuzz_reply fuzz_data fuzz_cmd fuzz_config fuzz_filter
           fuzz_proxyproto fuzz_session)
fi
work=${FUZZ_WORK:-/tmp/starttls-proxy-fuzz}

cmake -S . -B build-fuzz -DENABLE_FUZZERS=ON -DCMAKE_C_COMPILER=clang \
      -DBUILD_TESTING=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}" >/dev/null

# run_one TARGET - one libFuzzer run of secs seconds, niced
run_one() {
  local t=$1 dir=$work/$1 start rc=0
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -n tests/fuzz/corpus/"$t"/* "$dir/corpus/" 2>/dev/null || true
  start=$(date +%s)
  nice -n 10 build-fuzz/tests/fuzz/"$t" -max_total_time="$secs" \
    -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" "$dir/corpus" \
    >"$dir/log.txt" 2>&1 || rc=$?
  echo "exit=$rc wall=$(( $(date +%s) - start ))" >>"$dir/log.txt"
}

running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

found=0
printf '%-16s %6s %10s %6s %12s %s\n' target secs execs cov corpus crashers
for t in "${targets[@]}"; do
  log=$work/$t/log.txt
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$done_line")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$done_line")
  wall=$(sed -n 's/^exit=.* wall=\([0-9]*\)$/\1/p' "$log")
  crashes=$(find "$work/$t/artifacts" -type f | wc -l)
  [ "$crashes" -eq 0 ] || found=1
  printf '%-16s %6s %10s %6s %12s %s\n' "$t" "${wall:-?}" "${execs:-?}" \
    "${cov:-?}" "${corp:-?}" "$crashes"
done
exit "$found"

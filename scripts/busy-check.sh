#!/usr/bin/env bash
# The suite on a busy machine: `make test` N times in a row (default 3) while two
# CPU-bound processes load both cores. Prints one line per run and exits non-zero if
# any run failed. Used for the claim "green on a busy machine" (README, docs/design.md).
set -u
cd "$(dirname "$0")/.."
runs=${1:-3}
load=()
for _ in 1 2; do
    python3 -c 'while True: pass' &
    load+=($!)
done
trap 'kill "${load[@]}" 2>/dev/null' EXIT
failed=0
for i in $(seq 1 "$runs"); do
    start=$(date +%s)
    if make test >"/tmp/cpos-busy-$i.log" 2>&1; then verdict=passed; else verdict=FAILED; failed=$((failed + 1)); fi
    echo "run $i/$runs under load: $verdict in $(( $(date +%s) - start )) s: $(grep -E '[0-9]+ (passed|failed)' "/tmp/cpos-busy-$i.log" | tail -1) (log /tmp/cpos-busy-$i.log)"
done
exit $((failed > 0))

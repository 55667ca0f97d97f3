#!/usr/bin/env bash
# The GPU check of the Triton backend, in one go: the tests of tests/test_triton.py on the compiled kernels
# (including the GPU-only ones), then benchmarks/roofline.py at full size. Installs nothing and needs no
# network. Prints a short summary and the roofline table last; record the figures in benchmarks/GPU_NOTES.md.
#
#   bash benchmarks/gpu_check.sh                 # everything
#   bash benchmarks/gpu_check.sh --only image    # extra arguments go to roofline.py
#
# TEST_TIMEOUT (default 420) and BENCH_TIMEOUT (default 300) bound the two parts, in seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET  # the interpreter would hide the compiled kernels

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2
    exit 2
fi
python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader 2>/dev/null || true

log=$(mktemp -d)
# About 130 kernel specializations are compiled by the tests, a few seconds each: JOBS pytest processes
# (default 8) share them out and compile in parallel, on the one GPU (the tests are small; one uses ~4 GB).
jobs=${JOBS:-8}
echo "== tests/test_triton.py (compiled kernels, $jobs processes) =="
python -m pytest tests/test_triton.py --collect-only -q -p no:cacheprovider 2>/dev/null | grep '::' >"$log/ids.txt"
split -n "r/$jobs" -d "$log/ids.txt" "$log/part."
start=$SECONDS
for part in "$log"/part.*; do
    [ -s "$part" ] || continue
    # shellcheck disable=SC2046
    timeout "${TEST_TIMEOUT:-420}" python -m pytest -q -p no:cacheprovider -rfE $(cat "$part") >"$part.out" 2>&1 &
done
test_rc=0
for pid in $(jobs -p); do wait "$pid" || test_rc=1; done
grep -h -E '^(FAILED|ERROR)' "$log"/part.*.out | head -n 40
passed=$(cat "$log"/part.*.out | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(cat "$log"/part.*.out | grep -oE '[0-9]+ (failed|error)' | awk '{s+=$1} END {print s+0}')
skipped=$(cat "$log"/part.*.out | grep -oE '[0-9]+ skipped' | awk '{s+=$1} END {print s+0}')
tests_line="$passed passed, $failed failed, $skipped skipped of $(wc -l <"$log/ids.txt") in $((SECONDS - start)) s"
echo "$tests_line (logs: $log/part.*.out)"

echo "== benchmarks/roofline.py =="
timeout "${BENCH_TIMEOUT:-300}" python benchmarks/roofline.py "$@" >"$log/bench.txt" 2>&1
bench_rc=$?
sed -n '/^case /,$!p' "$log/bench.txt"

echo
echo "== summary =="
echo "tests: $tests_line (exit $test_rc)"
echo "roofline: exit $bench_rc (targets on H100/H200: uint8 image K=8 <= 0.15 ms, K=64 <= 0.4 ms, K=256 <= 1.5 ms;"
echo "          embeddings: triton (fast) <= flash-kmeans where that row is present)"
sed -n '/^case /,$p' "$log/bench.txt"
exit $(( test_rc != 0 || bench_rc != 0 ))

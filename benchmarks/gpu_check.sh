#!/usr/bin/env bash
# The GPU check of pixelkm in one call, for a bare H100/H200 with no network (see benchmarks/GPU_NOTES.md):
#   1. checks that torch, triton, numpy and PIL import (says which are missing), and that torch sees a GPU;
#   2. installs this checkout offline: python3 -m pip install --no-build-isolation --no-deps -e .
#      (and the wheels in --wheels DIR, e.g. flash-kmeans 0.3.1 and tqdm, with --no-index --no-deps);
#   3. runs the WHOLE test suite on CUDA (tests marked gpu included) in parallel pytest processes,
#      and fails when a test fails or when no test ran;
#   4. runs benchmarks/roofline.py at full size: per case the kernel alone (CUDA events) beside the whole
#      Lloyd step, the torch reference, a naive step and flash-kmeans where it imports, with the floors;
#   5. profiles quantize -k 16 on a 12 MP photo (benchmarks/profile_cli.py), then times the pixelkm command on
#      it (benchmarks/photo_commands.py; --device auto takes the GPU).
# Everything it prints also goes to --log-dir (default: $OUT/gpu_check when $OUT is set, so that the logs come
# back from the device machine; else ./gpu_check_logs). Per-step timeouts keep it inside 9 minutes.
#
#   bash benchmarks/gpu_check.sh [--log-dir DIR] [--wheels DIR] [--jobs N] [-- roofline.py arguments]
#
# Environment: INSTALL_TIMEOUT (45), TEST_TIMEOUT (300), BENCH_TIMEOUT (120), PROFILE_TIMEOUT (45), PHOTO_TIMEOUT
# (60) seconds; PHOTO_ROWS (photo_commands.py --only; "none" skips step 5). The logs are at most 7 files, so that
# all come back from $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1  # output reaches the logs as it comes (a step cut by its timeout keeps what it printed)
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET  # the interpreter would hide the compiled kernels

log_dir=""
wheels=""
jobs=""
bench_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --log-dir) log_dir="$2"; shift 2 ;;
        --wheels) wheels="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --) shift; bench_args=("$@"); break ;;
        *) bench_args+=("$1"); shift ;;
    esac
done
if [ -z "$log_dir" ]; then
    if [ -n "${OUT:-}" ]; then log_dir="$OUT/gpu_check"; else log_dir="gpu_check_logs"; fi
fi
mkdir -p "$log_dir"
log_dir=$(cd "$log_dir" && pwd)
exec > >(tee "$log_dir/gpu_check.txt") 2>&1
echo "gpu_check: logs in $log_dir; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(date -u)"

py=python3
if ! command -v "$py" >/dev/null; then echo "gpu_check: python3 not found" >&2; exit 2; fi
missing=$("$py" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "triton", "numpy", "PIL", "pytest") if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python packages: $missing (this script installs nothing from the network)" >&2
    exit 2
fi
if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2
    exit 2
fi
"$py" -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader 2>/dev/null || true

echo "== install (offline) =="
if ! timeout "${INSTALL_TIMEOUT:-45}" "$py" -m pip install -q --no-build-isolation --no-deps -e . >"$log_dir/install.txt" 2>&1; then
    echo "gpu_check: 'pip install --no-build-isolation --no-deps -e .' failed (is setuptools installed?):" >&2
    tail -n 20 "$log_dir/install.txt" >&2
    exit 2
fi
if [ -n "$wheels" ]; then
    # shellcheck disable=SC2046
    timeout "${INSTALL_TIMEOUT:-45}" "$py" -m pip install -q --no-index --no-deps $(ls "$wheels"/*.whl) \
        >>"$log_dir/install.txt" 2>&1 || echo "gpu_check: the wheels in $wheels did not install (see install.txt)"
fi
"$py" -c "import pixelkm, pixelkm.backends.triton_backend as t; print('pixelkm', pixelkm.__file__, '| triton backend:', t.IMPORT_ERROR or 'ok')"
"$py" -c "import flash_kmeans; print('flash-kmeans', getattr(flash_kmeans, '__version__', '?'))" 2>/dev/null \
    || echo "flash-kmeans: not installed (its rows are left out; see benchmarks/GPU_NOTES.md)"

# The test photographs live in ../shared/images, which does not travel to a device machine: link the one that
# ships with the package (pixelkm/data) there when the folder is absent; tests needing the others then fail
# with their names.
if [ ! -e ../shared/images ]; then
    mkdir -p ../shared && ln -s "$PWD/pixelkm/data" ../shared/images \
        && echo "note: ../shared/images was absent: linked to pixelkm/data (kodim23.png only)"
fi

jobs=${jobs:-$("$py" -c "import os; print(min(8, max(1, (os.cpu_count() or 2) // 2)))")}
echo "== tests: the whole suite on CUDA, $jobs processes =="
"$py" -m pytest tests --collect-only -q -p no:cacheprovider 2>"$log_dir/collect_err.txt" | grep '::' >"$log_dir/ids.txt"
total=$(wc -l <"$log_dir/ids.txt")
if [ "$total" -eq 0 ]; then
    echo "gpu_check: no tests collected:" >&2
    tail -n 20 "$log_dir/collect_err.txt" >&2
    exit 1
fi
start=$SECONDS
test_rc=0
if "$py" -c "import xdist" 2>/dev/null; then  # pytest-xdist: tests shared out as workers free up
    # first the files that use CUDA (so that a cut-short run still reports them), then the rest in the time left
    gpu_files=$(grep -l -E "cuda|CUDA" tests/test_*.py | tr '\n' ' ')
    other_files=$(ls tests/test_*.py | grep -v -x -F -f <(tr ' ' '\n' <<<"$gpu_files") | tr '\n' ' ')
    budget=${TEST_TIMEOUT:-300}
    echo "== $gpu_files ==" >"$log_dir/tests.txt"
    # shellcheck disable=SC2086
    timeout $((budget * 3 / 5)) "$py" -m pytest $gpu_files -q -p no:cacheprovider -rfEs -n "$jobs" \
        >>"$log_dir/tests.txt" 2>&1 || test_rc=1
    left=$((budget - (SECONDS - start)))
    echo "== $other_files ==" >>"$log_dir/tests.txt"
    if [ "$left" -gt 10 ]; then
        # shellcheck disable=SC2086
        timeout "$left" "$py" -m pytest $other_files -q -p no:cacheprovider -rfEs -n "$jobs" \
            >>"$log_dir/tests.txt" 2>&1 || test_rc=1
    else
        echo "(no time left for them)" >>"$log_dir/tests.txt"
        test_rc=1
    fi
else  # one process per group of test files (test ids hold spaces and brackets: files are the unit)
    rm -f "$log_dir"/part.*
    cut -d: -f1 "$log_dir/ids.txt" | sort -u >"$log_dir/files.txt"
    split -n "r/$jobs" -d "$log_dir/files.txt" "$log_dir/part."
    for part in "$log_dir"/part.??; do
        [ -s "$part" ] || continue
        # shellcheck disable=SC2046
        timeout "${TEST_TIMEOUT:-300}" "$py" -m pytest -q -p no:cacheprovider -rfEs $(cat "$part") >"$part.out" 2>&1 &
    done
    for pid in $(jobs -p); do wait "$pid" || test_rc=1; done
    # one file of test output (the device tool brings back at most 8 files from $OUT)
    for part in "$log_dir"/part.??; do echo "=== $(basename "$part"): $(tr '\n' ' ' <"$part") ==="; cat "$part.out"; done \
        >"$log_dir/tests.txt"
    rm -f "$log_dir"/part.* "$log_dir/files.txt"
fi
rm -f "$log_dir/ids.txt"
grep -E '^(FAILED|ERROR)' "$log_dir/tests.txt" | head -n 60
count() { grep -oE "[0-9]+ $1" "$log_dir/tests.txt" | awk '{s+=$1} END {print s+0}'; }
passed=$(count passed)
failed=$(( $(count failed) + $(count error) ))
skipped=$(count skipped)
tests_line="$passed passed, $failed failed, $skipped skipped of $total collected in $((SECONDS - start)) s"
if [ "$test_rc" -ne 0 ] && [ $((SECONDS - start)) -ge "${TEST_TIMEOUT:-300}" ]; then
    tests_line="$tests_line (a process may have hit TEST_TIMEOUT=${TEST_TIMEOUT:-300})"
fi
if [ "$passed" -eq 0 ]; then
    echo "gpu_check: no test passed: treating it as a failure" >&2
    test_rc=1
fi
echo "$tests_line"
grep "SKIPPED" "$log_dir/tests.txt" | grep -i "cuda\|gpu" | head -n 5

echo "== benchmarks/roofline.py =="
timeout "${BENCH_TIMEOUT:-120}" "$py" benchmarks/roofline.py "${bench_args[@]}" >"$log_dir/roofline.txt" 2>&1
bench_rc=$?
sed -n '/^case /,$!p' "$log_dir/roofline.txt"

photo_rc=0
if [ "${PHOTO_ROWS:-}" != none ]; then
    echo "== where quantize -k 16 spends its time on a 12 MP photo, on the GPU (benchmarks/profile_cli.py) =="
    timeout "${PROFILE_TIMEOUT:-45}" "$py" benchmarks/profile_cli.py --top 35 quantize {src} -o {out}/q.png -k 16 \
        >"$log_dir/profile.txt" 2>&1 || photo_rc=1
    grep -E "wall|first run" "$log_dir/profile.txt"
    echo "== the pixelkm command on a 12 MP photo, on the GPU (benchmarks/photo_commands.py) =="
    timeout "${PHOTO_TIMEOUT:-60}" "$py" benchmarks/photo_commands.py --only "${PHOTO_ROWS:-quantize16,quantize16,quantize256,quantize16-lab,segment8,remove-bg,choose-k,palette6,sklearn16}" \
        >"$log_dir/photos.txt" 2>&1 || photo_rc=1
    cat "$log_dir/photos.txt"
fi
echo
echo "== summary =="
echo "tests: $tests_line (exit $test_rc)"
echo "photo commands: exit $photo_rc"
echo "roofline: exit $bench_rc (targets on H100/H200: uint8 image K=8 <= 0.15 ms, K=64 <= 0.4 ms, K=256 <= 1.5 ms;"
echo "          embeddings: triton <= flash-kmeans, float32 and bfloat16, where that row is present)"
sed -n '/^case /,$p' "$log_dir/roofline.txt"
exit $(( test_rc != 0 || bench_rc != 0 ))

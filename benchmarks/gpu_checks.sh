#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run of a few minutes (an H200: about five), offline.
#
#   OUT=/some/dir bash benchmarks/gpu_checks.sh
#
# Needs: a Python with a CUDA build of torch, lightning, pluggy, nvidia-ml-py, pytest, hypothesis and
# setuptools (the packages are built here with --no-build-isolation, from this checkout, without an
# index). Every step runs even when one before it failed; each one's output is saved under $OUT, and
# $OUT/summary.txt lists each step's exit status. The script exits 1 when any step failed.
#
#   1. install mixprec, mixprec-cuda, mixprec-cpu (and mixprec-fp8 where backends/fp8 exists)
#   2. in a fresh process: get_precision for every precision served on "cuda" (Fabric and Trainer
#      objects), available() and explain() leave torch.cuda.is_initialized() False; then, with CUDA
#      started, the GPUs mixprec-cuda read through NVML are torch's               -> no-init.json
#   3. mixprec list (text and JSON), mixprec check cuda (text and JUnit XML)       -> list.*, check-cuda.*
#   4. pytest: mixprec-cuda's tests on the GPU and the ddp_fork tests              -> pytest.txt, pytest.xml
#   5. benchmarks/gpu.py: plugin vs hand-written steps, "auto" vs the fastest      -> gpu-bench.json
#
# Settings, from the environment: PYTHON (default python3); GPU_CHECKS_INSTALL=0 skips step 1 (to
# use what is installed); BENCH_ARGS (default --quick; "" for the full benchmark, about three
# minutes more on an H200; --dry-run runs its code paths on the CPU). A dry run of this script on
# a CPU-only machine, which checks its plumbing (steps 2 and 5 fail there, saying why):
#   OUT=/tmp/gpu-checks PYTHON=/path/to/venv/python GPU_CHECKS_INSTALL=0 BENCH_ARGS=--dry-run bash benchmarks/gpu_checks.sh
set -u -o pipefail

: "${OUT:?set OUT to the directory the results go to}"
PYTHON=${PYTHON:-python3}
BENCH_ARGS=${BENCH_ARGS---quick}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
: >"$OUT/summary.txt"
failed=0

# step NAME TIMEOUT_S COMMAND...: run COMMAND, show and save its output to $OUT/NAME.txt, record its status.
step() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "$name $rc" >>"$OUT/summary.txt"
    [ "$rc" -eq 0 ] || failed=1
    echo "=== $name: exit $rc"
}

{
    "$PYTHON" --version
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
    nvidia-smi -L
    env | grep -E '^(CUDA_|NVIDIA_)' || true
} >"$OUT/env.txt" 2>&1

if [ "${GPU_CHECKS_INSTALL:-1}" != 0 ]; then
    packages=(. ./backends/cuda ./backends/cpu)
    # mixprec-fp8 is a distribution of its own, installed with the others where this checkout has it.
    [ -f backends/fp8/pyproject.toml ] && packages+=(./backends/fp8)
    # torchao travels as a wheel in .whl/ (a machine without an index cannot fetch it), made beforehand with
    #   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    #     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl torchao==0.18.0
    for wheel in .whl/torchao-*.whl; do [ -f "$wheel" ] && packages+=("$wheel"); done
    step install 300 "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index --force-reinstall "${packages[@]}"
fi

# Run from a directory outside the checkout, so that the installed packages are the ones imported.
step no-init 300 env -C "$OUT" "$PYTHON" - <<'PY'
import importlib.util
import json
import sys

import torch

import mixprec
from mixprec_cuda import policy

if torch.cuda.device_count() == 0:  # counts through NVML, starting nothing
    sys.exit("no CUDA GPU is visible here: these checks need one")
served = [*policy.OFFERED, "32-true", "64-true"]
if importlib.util.find_spec("mixprec_fp8") is not None:
    served.append("fp8-mixed")  # mixprec-fp8 reads compute capability through mixprec-cuda's NVML probe
built = {
    f"{precision} {target}": type(mixprec.get_precision(precision, "cuda", target=target)).__name__
    for precision in served
    for target in ("fabric", "trainer")
}
records = [[r.backend, r.precision, r.status, r.reason] for r in mixprec.available("cuda")]
explained = str(mixprec.explain("auto", "cuda"))
started = torch.cuda.is_initialized()
before = policy.probe()
torch.cuda.init()
found = {
    "started_by_mixprec": started,
    "built": built,
    "available": records,
    "explain": explained,
    "nvml_gpus": [[gpu.name, gpu.capability] for gpu in before.devices],
    "torch_gpus": [[torch.cuda.get_device_name(i), list(torch.cuda.get_device_capability(i))]
                   for i in range(torch.cuda.device_count())],
}
with open("no-init.json", "w") as out:
    json.dump(found, out, indent=2)
print(json.dumps(found, indent=2))
assert not started, "get_precision/available/explain initialised CUDA"
assert [list(c) for _, c in found["nvml_gpus"]] == [c for _, c in found["torch_gpus"]], "NVML's GPUs are not torch's"
PY

step list 120 env -C "$OUT" "$PYTHON" -m mixprec list
step list-json 120 env -C "$OUT" "$PYTHON" -m mixprec list --json -o "$OUT/list.json"
step check-cuda 600 env -C "$OUT" "$PYTHON" -m mixprec check cuda --junit-xml "$OUT/check-cuda.xml"
step pytest 600 "$PYTHON" -m pytest tests/backends/test_cuda.py tests/integration/test_fork.py -q -rA \
    --junitxml="$OUT/pytest.xml"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
step gpu-bench 900 "$PYTHON" benchmarks/gpu.py --json "$OUT/gpu-bench.json" $BENCH_ARGS
if [ -f backends/fp8/pyproject.toml ]; then
    # fp8 vs bf16-mixed vs 32-true at the widths where float8 should pay (the target: >= 1.2x bf16 at 4096).
    step check-fp8 600 env -C "$OUT" "$PYTHON" -m mixprec check fp8-cuda --junit-xml "$OUT/check-fp8.xml"
    step fp8-bench 900 "$PYTHON" benchmarks/fp8.py --device cuda --compile --widths 2048 4096 --json "$OUT/fp8-bench.json"
fi

echo "=== summary (step exit-status):"
cat "$OUT/summary.txt"
exit "$failed"

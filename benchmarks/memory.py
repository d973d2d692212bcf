"""Peak memory of training through mixprec's precision vs by hand, one fresh process per configuration.

Usage: ``python benchmarks/memory.py [--quick] [--json OUT] [--threads N]``

Each configuration (precision x plugin/hand) runs in its own interpreter, which imports torch,
lightning and mixprec and builds the model and batch *before* reading its baseline, so the only
difference between configurations is the training itself. The peak is the process's peak RSS
(``ru_maxrss``) after a few steps. Reported: the peak, the peak above the baseline, plugin / hand
(target <= 1.01: no extra copies of weights, gradients or inputs), and what each precision saves
over fp32.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import harness

#: A model whose memory is mostly activations (as in most training), small enough for emulated fp16.
CONFIG = {"width": 256, "depth": 4, "batch": 8192}
#: glibc's malloc adapts its mmap threshold as memory is freed, which makes peak RSS vary from run to
#: run by more than 1%; a fixed threshold (tensors above 64 KiB mmapped, as torch's large ones are) steadies it.
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "65536"}
#: (precision, variant): "hand" exists for the mixed precisions and plain fp32 only.
CASES = (
    ("32-true", "hand"),
    ("32-true", "plugin"),
    ("bf16-mixed", "hand"),
    ("bf16-mixed", "plugin"),
    ("16-mixed", "hand"),
    ("16-mixed", "plugin"),
    ("bf16-true", "plugin"),
    ("16-true", "plugin"),
)
TARGET = 1.01


def peak_kib() -> int:
    """This process's peak resident set size so far, in KiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(precision: str, variant: str, steps: int, threads: int) -> dict[str, Any]:
    """Train ``steps`` steps in this process; return the baseline and peak RSS in MiB."""
    import lightning  # noqa: F401  (every configuration imports the same modules before its baseline)
    import torch
    from models import Config, build, hand_step, plugin_step

    import mixprec

    torch.set_num_threads(threads)
    config = Config("memory", "mlp", **CONFIG)
    model, x, y = build(config)
    if variant == "plugin":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mixprec.PrecisionWarning)
            obj = mixprec.get_precision(precision, "cpu")
        model = obj.convert_module(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step = plugin_step(obj, model, optimizer, x, y)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step = hand_step(precision, "cpu", model, optimizer, x, y)
    baseline = peak_kib()
    for _ in range(steps):
        step()
    return {"baseline_mib": baseline / 1024, "peak_mib": peak_kib() / 1024}


def run_case(precision: str, variant: str, steps: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__)), "--child", precision, variant, str(steps), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=dict(os.environ, **ALLOCATOR))
    if done.returncode != 0:
        raise RuntimeError(f"{precision} {variant} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    args = harness.arguments(__doc__ or "")
    repeats, steps = (1, 2) if args.quick else (3, 2)
    settings = {"repeats": repeats, "steps": steps, "threads": args.threads, "model": CONFIG, "env": ALLOCATOR}
    report = harness.Report("memory", settings)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {case: [] for case in CASES}
    for _ in range(repeats):
        for precision, variant in CASES:
            print(f"{precision} {variant}", flush=True)
            runs[precision, variant].append(run_case(precision, variant, steps, args.threads))
    peak = {case: statistics.median(r["peak_mib"] for r in found) for case, found in runs.items()}
    above = {case: statistics.median(r["peak_mib"] - r["baseline_mib"] for r in found) for case, found in runs.items()}
    fp32 = above["32-true", "hand"]
    for case in CASES:
        report.result(
            precision=case[0],
            variant=case[1],
            peak_mib=peak[case],
            training_mib=above[case],
            training_vs_fp32=above[case] / fp32,
        )
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        ratio = peak[precision, "plugin"] / peak[precision, "hand"]
        report.result(precision=precision, plugin_over_hand_peak=ratio)
        report.target(f"memory {precision}: plugin / hand peak RSS", ratio, at_most=TARGET)
    report.write(args.json, args.threads)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()

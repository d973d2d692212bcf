"""Run as a script: 32 threads make their first mixprec calls at once, in this fresh process.

Each thread waits at a barrier, then makes one call: ``get_precision`` for Fabric, for the Trainer
(``target="trainer"``) and for FSDP (``strategy="fsdp"``), ``available()`` or ``explain()``. The
script prints one JSON object per call: the call's name and what it gave ("ok" and the class of what
it returned, or the exception), so the test can say which call failed and how.
"""

from __future__ import annotations

import json
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import mixprec

THREADS = 32
#: The precision every get_precision asks for: the one with a GradScaler, the most that is built.
PRECISION = "16-mixed"

CALLS: dict[str, Callable[[], Any]] = {
    "fabric": lambda: mixprec.get_precision(PRECISION, "cpu"),
    "trainer": lambda: mixprec.get_precision(PRECISION, "cpu", target="trainer"),
    "fsdp": lambda: mixprec.get_precision(PRECISION, "cpu", strategy="fsdp"),
    "available": mixprec.available,
    "explain": lambda: mixprec.explain(PRECISION, "cpu"),
}


def outcome(call: Callable[[], Any]) -> str:
    try:
        result = call()
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"ok {type(result).__module__}.{type(result).__qualname__}"


def main() -> None:
    # "16-mixed" on a CPU without native float16 is "slow": a warning, which is not what is tested here.
    warnings.simplefilter("ignore", mixprec.PrecisionWarning)
    names = [list(CALLS)[i % len(CALLS)] for i in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = [""] * THREADS

    def run(i: int) -> None:
        barrier.wait()
        outcomes[i] = outcome(CALLS[names[i]])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, result in zip(names, outcomes, strict=True):
        sys.stdout.write(json.dumps({"call": name, "outcome": result}) + "\n")


if __name__ == "__main__":
    main()

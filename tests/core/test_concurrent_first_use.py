"""Concurrent first use: many threads making their first mixprec calls at once, in fresh processes.

The first calls import torch, lightning and the backends' policies; Python's imports of packages
with import cycles are not safe from threads, so this only holds because mixprec makes those
imports under one lock. Several fresh processes run at once, as the failure was found: in each,
32 threads wait at a barrier and then call (see ``first_use_worker.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.core import first_use_worker

pytestmark = pytest.mark.slow

PROCESSES = 4
#: What each call returns: the class of the object, or of the records.
EXPECTED = {
    "fabric": "ok mixprec._fabric.AutocastPrecision",
    "trainer": "ok mixprec._trainer.MixedPrecision",
    "fsdp": "ok mixprec._fabric.FSDPPrecision",
    "available": "ok builtins.list",
    "explain": "ok mixprec._explain.Explanation",
}


@pytest.fixture(scope="module")
def outcomes() -> list[dict[str, Any]]:
    """What every call in every process gave: fresh interpreters started together, no MIXPREC_* setting."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MIXPREC_")}
    env["OMP_NUM_THREADS"] = "1"
    processes = [
        subprocess.Popen(
            [sys.executable, first_use_worker.__file__],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    found: list[dict[str, Any]] = []
    for process in processes:
        out, err = process.communicate(timeout=600)  # a guard against a deadlock, generous for a busy machine
        assert process.returncode == 0, err[-4000:]
        found.extend(json.loads(line) for line in out.splitlines())
    return found


def test_every_process_made_every_call_from_every_thread(outcomes: list[dict[str, Any]]) -> None:
    assert len(outcomes) == PROCESSES * first_use_worker.THREADS
    assert {o["call"] for o in outcomes} == set(first_use_worker.CALLS)


def test_every_first_call_made_at_once_from_many_threads_succeeds(outcomes: list[dict[str, Any]]) -> None:
    failed = [o for o in outcomes if o["outcome"] != EXPECTED[o["call"]]]

    assert failed == []

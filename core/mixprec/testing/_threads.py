"""The checks of one object used from two threads: what forward_context() does stays in the thread that entered it.

torch keeps autocast (enabled, dtype, its cache and nesting), grad mode and inference mode per
thread, so ``torch.autocast`` entered in one thread changes nothing in another, and two threads
can each run a forward under one object's ``forward_context()`` (a data loader's worker thread,
a serving thread per request, a metric computed beside training). A context that reaches further,
by patching torch's functions for the whole process, or keeps what it saved or counted on the
object rather than per entry, breaks that: the other thread computes in the wrong dtype, or a
thread's context does nothing because another one is open.

torch's default dtype is one for the whole process: a "true" precision's ``forward_context()``
sets it for every thread (Lightning's ``HalfPrecision`` does), which these checks do not hold
against it; they compare the state torch keeps per thread and the dtypes a forward computes in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from lightning.fabric.plugins.precision import Precision
from torch import Tensor, nn

from mixprec._contract import Contract
from mixprec.testing._base import CheckFailed, Subject, _require, check
from mixprec.testing._global_state import AUTOCAST_DEPTH, changes, snapshot

__all__ = ["forward_context_concurrent_threads", "forward_context_thread_local"]

_T = TypeVar("_T")
#: Seconds a thread waits for the other at a meeting point before the check gives up (a context that deadlocks).
_TIMEOUT = 30.0
#: The parts of torch's global state that torch keeps per thread.
_PER_THREAD = ("grad mode", "inference mode", "autocast's cache", AUTOCAST_DEPTH)


def _per_thread(device_type: str) -> dict[str, Any]:
    state = snapshot(device_type)
    return {name: value for name, value in state.items() if name in _PER_THREAD or name.startswith("autocast for")}


def _in_thread(function: Callable[[], _T]) -> _T:
    """``function()`` run in a new thread: its result, or its exception raised here."""
    results: list[_T] = []
    errors: list[BaseException] = []
    threads = torch.get_num_threads()

    def target() -> None:
        try:
            _same_threads(threads)
            results.append(function())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="mixprec-check")
    thread.start()
    thread.join(_TIMEOUT)
    if thread.is_alive():
        raise CheckFailed(f"a thread using the object did not finish within {_TIMEOUT:g} s: it deadlocked")
    if errors:
        raise errors[0]
    return results[0]


def _same_threads(count: int) -> None:
    """Run torch's CPU kernels in this new thread on as many threads as in the one that started it.

    OpenMP counts threads per thread: a new thread would start a pool of its own for the tiny model.
    """
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def _computes(device_type: str, model: nn.Module, x: Tensor) -> tuple[bool, torch.dtype, torch.dtype]:
    """In this thread: whether autocast is on, and the dtypes of a float32 nn.Linear's and matmul's outputs."""
    with torch.no_grad():
        return torch.is_autocast_enabled(device_type), model(x).dtype, (x @ x.T).dtype


@check()
def forward_context_thread_local(subject: Subject, contract: Contract) -> None:
    """While one thread is inside forward_context(), another computes as it would without it: autocast off, and
    a float32 nn.Linear and matmul in float32."""
    p = subject.make()
    device_type = subject.device.type
    model = subject.model()
    x, _ = subject.data
    alone = _in_thread(lambda: _computes(device_type, model, x))
    with p.forward_context():
        beside = _in_thread(lambda: _computes(device_type, model, x))
    names = ("autocast is on", "nn.Linear computes in", "a matmul computes in")
    differ = "; ".join(f"{n} {b} (without it: {a})" for n, a, b in zip(names, alone, beside, strict=True) if a != b)
    _require(
        not differ,
        f"while another thread is inside forward_context(), a thread that never entered it finds: {differ}. What"
        " forward_context() changes must stay in the thread that entered it: use torch.autocast, which torch keeps"
        " per thread, and never patch torch's functions or classes for the whole process",
    )


class _Thread:
    """One of two threads that take turns through the object's forward_context(), meeting at a barrier."""

    def __init__(self, p: Precision, model: nn.Module, x: Tensor, device_type: str) -> None:
        self.p, self.model, self.x, self.device_type = p, model, x, device_type
        #: (autocast on, autocast dtype, output dtype) each time the thread looked, inside the context.
        self.inside: list[tuple[bool, torch.dtype, Any]] = []
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    def look(self) -> None:
        try:
            with torch.no_grad():
                out: Any = self.model(self.p.convert_input(self.x)).dtype
        except RuntimeError as exc:  # e.g. low-precision inputs meeting float32 weights without autocast
            out = f"an error ({str(exc).splitlines()[0]})"
        autocast = torch.is_autocast_enabled(self.device_type)
        self.inside.append((autocast, torch.get_autocast_dtype(self.device_type), out))

    def run(self, barrier: threading.Barrier, first: bool) -> None:
        """Enter, wait for the other to enter, look; the first leaves, then the second looks again and leaves."""
        before = _per_thread(self.device_type)
        try:
            with self.p.forward_context():
                barrier.wait(_TIMEOUT)  # both inside
                self.look()
                barrier.wait(_TIMEOUT)
                if not first:
                    barrier.wait(_TIMEOUT)  # the first has left
                    self.look()
            if first:
                barrier.wait(_TIMEOUT)
        except BaseException:
            barrier.abort()
            raise
        self.after = _per_thread(self.device_type)
        self.before = before


def _together(threads: list[_Thread]) -> None:
    barrier = threading.Barrier(len(threads))
    errors: list[BaseException] = []
    count = torch.get_num_threads()

    def target(thread: _Thread, first: bool) -> None:
        try:
            _same_threads(count)
            thread.run(barrier, first)
        except threading.BrokenBarrierError:
            pass  # the other thread failed: its error is the one to report
        except BaseException as exc:
            errors.append(exc)

    running = [threading.Thread(target=target, args=(t, i == 0), name="mixprec-check") for i, t in enumerate(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(3 * _TIMEOUT)
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in running) or barrier.broken:
        raise CheckFailed(
            "two threads inside forward_context() of one object did not both get through it: it deadlocked"
        )


@check()
def forward_context_concurrent_threads(subject: Subject, contract: Contract) -> None:
    """Two threads inside one object's forward_context() at once each compute as one thread alone does, before and
    after the other leaves, and each leaves its own per-thread state as it found it (beyond what one thread alone
    leaves changed, which forward_context_restores_state reports)."""
    p = subject.make()
    device_type = subject.device.type
    x, _ = subject.data

    def alone() -> tuple[list[tuple[bool, torch.dtype, Any]], dict[str, Any], dict[str, Any]]:
        thread = _Thread(p, p.convert_module(subject.model()), x, device_type)
        before = _per_thread(device_type)
        with p.forward_context():
            thread.look()
        return thread.inside, before, _per_thread(device_type)

    (expected,), before, after = _in_thread(alone)
    # What one thread alone leaves changed is forward_context_restores_state's to report.
    known = tuple(name for name in before if before[name] != after[name])
    threads = [_Thread(p, p.convert_module(subject.model()), x, device_type) for _ in range(2)]
    _together(threads)
    names = ("autocast on", "autocast dtype", "output dtype")
    for number, thread in enumerate(threads, 1):
        when = ("with both inside", "after the other left")
        for seen, moment in zip(thread.inside, when, strict=False):
            differ = "; ".join(f"{n} {s} (alone: {e})" for n, e, s in zip(names, expected, seen, strict=True) if e != s)
            _require(
                not differ,
                f"thread {number} of two inside one object's forward_context(), {moment}, finds: {differ}. Each entry"
                " must do its own work: no depth counted, or state kept, on the object (a new torch.autocast per call)",
            )
        leaked = changes(thread.before, thread.after, ignore=known)
        _require(
            not leaked,
            f"thread {number} of two that used one object's forward_context() at once, after leaving it:"
            f" {leaked}. Save the state on each entry, per thread, and put that back (a new torch.autocast per"
            " call), never on the object",
        )

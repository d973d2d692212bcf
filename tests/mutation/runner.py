"""Running the conformance suite against mutants, each registered as a backend, and scoring the suite by them.

Each mutant becomes a backend of its own, ``mutant-<n>``, registered in-process with
``mixprec.register``: its policy's ``create(request)`` is the mutant's
``mixprec.precision.standard_precision(request)`` (see :mod:`tests.mutation.world`), for the six
standard precisions on the CPU. The suite (:class:`mixprec.testing.Suite`) then runs against it,
case by case, and the first failing case kills the mutant. Only the precisions whose objects hold
the mutated class are run (the others are the installed classes, unchanged); a mutant in no class
any precision's object holds is *unreached*, and counts as surviving. The objects are those the suite
checks: for Fabric and the Trainer, each for the ordinary strategies and for ``strategy="fsdp"``; a
mutant is run against the objects of the strategies whose classes hold it (``--strategy`` of the suite).

The suite runs in a worker process that lives across mutants; a mutant that does not finish within
the timeout (a hang) is recorded as ``timeout`` and its worker is replaced. A mutant that cannot even
be built (its module does not execute) fails the suite's cases through ``create`` and is killed only
because the suite reports the failure.
"""

from __future__ import annotations

import ast
import contextlib
import json
import multiprocessing
import sys
import threading
import time
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from tests.mutation.operators import operator_names, sites
from tests.mutation.world import TARGETS, Mutant, World, source, target_of

__all__ = [
    "EQUIVALENTS",
    "Equivalent",
    "Result",
    "Score",
    "Worker",
    "enumerate_mutants",
    "evaluate",
    "load_equivalents",
    "run",
    "sample",
    "score",
]

Outcome = Literal["killed", "survived", "timeout", "unreached"]
#: The precisions every mutant backend serves: the six standard ones.
PRECISIONS = ("16-mixed", "bf16-mixed", "32-true", "64-true", "16-true", "bf16-true")
#: The targets whose objects the suite builds, each with the strategies it asks for.
BUILT = (("fabric", None), ("trainer", None), ("fabric", "fsdp"), ("trainer", "fsdp"))
#: The mutants recorded as equivalent, with why.
EQUIVALENTS = Path(__file__).with_name("equivalents.json")
_REFERENCE = "mutation-reference"


@dataclass(frozen=True)
class Result:
    """What the suite did with one mutant: killed (by which case), survived, timed out, or never reached."""

    id: str
    module: str
    target: str
    operator: str
    function: str
    line: int
    before: str
    after: str
    outcome: Outcome
    #: The case that killed it (``precision:check``), or why it timed out.
    killed_by: str = ""
    detail: str = ""


def enumerate_mutants(modules: Iterable[str] = TARGETS) -> list[Mutant]:
    """Every mutant of ``modules``, by module, then operator, then site, in the order of the code."""
    found = []
    for module in modules:
        tree = ast.parse(source(module))
        for operator in operator_names():
            found += [Mutant(module, operator, i) for i in range(len(sites(tree, operator)))]
    return found


def sample(mutants: Sequence[Mutant], every: int) -> list[Mutant]:
    """A fixed subset: of each module's mutants, the first and then every ``every``-th."""
    chosen = []
    for module in dict.fromkeys(m.module for m in mutants):
        chosen += [m for m in mutants if m.module == module][::every]
    return chosen


# --- in the worker --------------------------------------------------------------------------------------------------


def _policy(name: str, build: Any) -> types.ModuleType:
    """A policy module for the backend ``name`` whose ``create`` is ``build``; put in sys.modules for the registry."""
    from mixprec import Availability

    module = types.ModuleType(f"tests.mutation._policy_{name.replace('-', '_')}")
    module.availability = lambda precision, device: Availability.available()  # type: ignore[attr-defined]
    module.device_count = lambda: 1  # type: ignore[attr-defined]
    module.create = build  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module


def _register(name: str, build: Any) -> None:
    """Register the backend ``name`` serving the standard precisions on the CPU, its objects built by ``build``."""
    import mixprec
    from mixprec import Backend, hookimpl

    policy = _policy(name, build).__name__

    class Plugin:
        @hookimpl
        def mixprec_backends(self) -> list[Backend]:
            return [Backend(name=name, device_type="cpu", precisions=PRECISIONS, policy=policy, priority=-10_000)]

    mixprec.register(Plugin(), name=name)


def _reference_classes() -> Mapping[str, tuple[type, ...]]:
    """The classes of the installed objects the suite builds for each precision: which a mutated class reaches."""
    from mixprec.precision import standard_precision

    _register(_REFERENCE, standard_precision)
    return {p: tuple(_built(p, t, s) for t, s in BUILT) for p in PRECISIONS}


def _built(precision: str, target: str, strategy: str | None) -> type:
    """The class of the installed object for ``precision``, ``target`` and ``strategy``; ``PrecisionError`` for one
    that is refused (float64 under FSDP): a mutant that builds one is killed by the check of the refusal."""
    import mixprec

    try:
        return type(mixprec.get_precision(precision, "cpu", backend=_REFERENCE, target=target, strategy=strategy))
    except mixprec.PrecisionError:
        return mixprec.PrecisionError


def _strategy(mutant: Mutant, tree: ast.Module, function: str, classes: Mapping[str, tuple[type, ...]]) -> str | None:
    """The suite's ``strategy`` for the mutant: "none" or "fsdp" when only that family's objects hold its class, else
    None (both)."""
    import importlib

    top = function.split(".")[0]
    if not any(isinstance(s, ast.ClassDef) and s.name == top for s in tree.body):
        return None
    installed = getattr(importlib.import_module(mutant.module), top)
    held = {
        strategy
        for built in classes.values()
        for (_, strategy), cls in zip(BUILT, built, strict=True)
        if installed in cls.__mro__
    }
    if held == {None}:
        return "none"
    if held == {"fsdp"}:
        return "fsdp"
    return None


def _affected(mutant: Mutant, tree: ast.Module, function: str, classes: Mapping[str, tuple[type, ...]]) -> list[str]:
    """The precisions whose objects run the mutated code: those holding its class, or all for a module's function."""
    import importlib

    top = function.split(".")[0]
    if not any(isinstance(s, ast.ClassDef) and s.name == top for s in tree.body):
        return list(PRECISIONS)
    installed = getattr(importlib.import_module(mutant.module), top)
    return [p for p, built in classes.items() if any(installed in cls.__mro__ for cls in built)]


def _covered() -> set[tuple[str, int]]:
    """The lines of the mutated modules that run, as (file, line): while the modules execute (a mutant's
    modules are executed anew) and while the suite runs against the installed classes.

    A mutant elsewhere behaves exactly as the installed code under the suite, so it survives without a run.
    """
    import importlib

    from mixprec.testing import Suite

    files = {importlib.import_module(m).__file__ for m in TARGETS}
    lines: set[tuple[str, int]] = set()

    def local(frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            lines.add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def calls(frame: types.FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename in files else None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite = Suite(_REFERENCE, "cpu")
        threading.settrace(calls)
        sys.settrace(calls)
        try:
            for module in TARGETS:
                World(ast.parse(source(module)), module).module(module)
            suite.run()
        finally:
            sys.settrace(None)
            threading.settrace(None)
    return lines


class _Evaluator:
    """The worker's state: the reference classes, the lines the suite runs, and a counter for backend names."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.classes = _reference_classes()
        self.covered = _covered()
        self.count = 0

    def __call__(self, mutant: Mutant) -> dict[str, Any]:
        import importlib

        from mixprec.testing import Suite
        from mixprec.testing._global_state import isolated

        tree, change = mutant.tree()
        precisions = _affected(mutant, tree, change.function, self.classes)
        if not precisions:
            return {"outcome": "unreached", "detail": "no object the suite builds holds the mutated class"}
        if (importlib.import_module(mutant.module).__file__, change.first_line) not in self.covered:
            return {"outcome": "unreached", "detail": f"the suite never runs line {change.first_line}"}
        world = World(tree, mutant.module)
        self.count += 1
        name = f"mutant-{self.count}"
        _register(name, lambda request: world.module("mixprec.precision").standard_precision(request))
        strategy = _strategy(mutant, tree, change.function, self.classes)
        with warnings.catch_warnings(), isolated("cpu"):
            warnings.simplefilter("ignore")
            for precision in precisions:
                for case in Suite(name, "cpu", precision, strategy=strategy).cases:
                    result = case.run()
                    if result.outcome == "failed":
                        return {"outcome": "killed", "killed_by": case.id, "detail": result.detail[:500]}
        return {"outcome": "survived"}


def _serve(connection: Connection) -> None:
    """The worker's loop: evaluate each mutant sent, answer with its outcome; stop at None."""
    evaluate_one = _Evaluator()
    connection.send("ready")
    while True:
        message = connection.recv()
        if message is None:
            return
        connection.send(evaluate_one(Mutant(**message)))


def evaluate(mutant: Mutant) -> dict[str, Any]:
    """Run the suite against ``mutant`` in this process (for tests of one mutant; :class:`Worker` bounds the time)."""
    return _Evaluator()(mutant)


# --- in the parent --------------------------------------------------------------------------------------------------


class Worker:
    """A process that runs the suite against mutants one at a time, replaced when one takes longer than ``timeout``."""

    def __init__(self, timeout: float, start_timeout: float = 300.0) -> None:
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._connection: Connection | None = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> Connection:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), daemon=True)
        process.start()
        self._process = process
        theirs.close()
        if not ours.poll(self.start_timeout) or ours.recv() != "ready":
            self.close()
            raise RuntimeError(f"the mutation worker did not start within {self.start_timeout:g} s")
        self._connection = ours
        return ours

    def evaluate(self, mutant: Mutant) -> dict[str, Any]:
        """The outcome of the suite against ``mutant``, or a timeout after ``timeout`` seconds."""
        connection = self._connection or self._start()
        connection.send(asdict(mutant))
        try:
            if connection.poll(self.timeout):
                answer: dict[str, Any] = connection.recv()
                return answer
            detail = f"the suite did not finish within {self.timeout:g} s"
        except EOFError:
            detail = f"the worker died (exit code {self._process.exitcode})"
        self.close()
        return {"outcome": "timeout", "killed_by": "timeout", "detail": detail}

    def close(self) -> None:
        """Stop the worker (kill it if it does not stop)."""
        if self._process is None:
            return
        if self._connection is not None:
            with contextlib.suppress(OSError):  # a worker that died has closed its end
                self._connection.send(None)
            self._connection.close()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process = None
        self._connection = None


def run(mutants: Sequence[Mutant], timeout: float = 120.0, progress: bool = False) -> list[Result]:
    """Run the suite against every mutant, in a worker process; the results in the order of ``mutants``."""
    results = []
    started = time.monotonic()
    with Worker(timeout) as worker:
        for i, mutant in enumerate(mutants, 1):
            _, change = mutant.tree()
            answer = worker.evaluate(mutant)
            results.append(
                Result(
                    mutant.id,
                    mutant.module,
                    target_of(mutant.module, change.function),
                    mutant.operator,
                    change.function,
                    change.line,
                    change.before,
                    change.after,
                    answer["outcome"],
                    answer.get("killed_by", ""),
                    answer.get("detail", ""),
                )
            )
            if progress:
                elapsed = time.monotonic() - started
                print(f"[{i}/{len(mutants)} {elapsed:.0f}s] {mutant.id}: {answer['outcome']}", file=sys.stderr)
    return results


# --- equivalents and the score --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equivalent:
    """Mutants no check can kill, because they change nothing an object promises, and why.

    An entry names one mutant (``operator``, ``before`` and ``after`` given) or every mutant of a function
    (only ``module`` and ``function``): a function whose code no object mixprec builds can run.
    """

    module: str
    function: str
    reason: str
    operator: str | None = None
    before: str | None = None
    after: str | None = None

    @property
    def exact(self) -> bool:
        """Whether the entry names one mutant rather than a whole function."""
        return self.operator is not None

    def matches(self, result: Result) -> bool:
        if (self.module, self.function) != (result.module, result.function):
            return False
        return not self.exact or (self.operator, self.before, self.after) == (
            result.operator,
            result.before,
            result.after,
        )


def load_equivalents(path: Path = EQUIVALENTS) -> list[Equivalent]:
    """The recorded equivalent mutants."""
    data = json.loads(path.read_text())
    return [Equivalent(**entry) for entry in data["equivalents"]]


@dataclass
class Score:
    """Killed, survived and equivalent mutants of one group (a module, a target, or all)."""

    killed: int = 0
    survived: int = 0
    equivalent: int = 0
    #: Equivalents the suite killed all the same: the record is wrong, or the check found what the record missed.
    equivalent_killed: list[str] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.killed + self.survived + self.equivalent

    @property
    def rate(self) -> float:
        """Killed over the mutants that are not equivalent (1.0 when there are none)."""
        counted = self.killed + self.survived
        return self.killed / counted if counted else 1.0


def _equivalent(result: Result, equivalents: Sequence[Equivalent]) -> Equivalent | None:
    return next((e for e in equivalents if e.matches(result)), None)


def score(results: Sequence[Result], equivalents: Sequence[Equivalent]) -> dict[str, dict[str, Score]]:
    """Scores by module, by target and overall (``{"module": {...}, "target": {...}, "all": {"all": ...}}``).

    A timeout counts as killed (the suite did not pass). An unreached or surviving mutant counts as
    surviving unless it is recorded as equivalent; an equivalent the suite killed counts as killed, and
    one recorded by itself is listed, so that a record that is wrong shows.
    """
    scores: dict[str, dict[str, Score]] = {"module": {}, "target": {}, "all": {}}
    for result in results:
        groups = (("module", result.module), ("target", result.target), ("all", "all"))
        equivalent = _equivalent(result, equivalents)
        for kind, key in groups:
            s = scores[kind].setdefault(key, Score())
            if result.outcome in ("killed", "timeout"):
                s.killed += 1
                if equivalent is not None and equivalent.exact:
                    s.equivalent_killed.append(result.id)
            elif equivalent is not None:
                s.equivalent += 1
            else:
                s.survived += 1
                s.survivors.append(result.id)
    return scores


def survivors(results: Sequence[Result], equivalents: Sequence[Equivalent]) -> Iterator[Result]:
    """The surviving (or unreached) mutants not recorded as equivalent."""
    for result in results:
        if result.outcome in ("survived", "unreached") and _equivalent(result, equivalents) is None:
            yield result

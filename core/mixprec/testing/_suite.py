"""Running the checks against one installed backend on one device, and the report of the run.

A run is a flat list of :class:`Case` objects, one per (target, strategy family, precision, check), decided
from the backend's description and each precision's contract before anything runs: every check of the
interface Fabric's and the Trainer's objects share runs against both objects, and the checks of one
interface (``backward``, ``optimizer_step`` and the loops differ) against that object only. The objects
for ``strategy="fsdp"`` are checked as well, by the checks :func:`~mixprec.testing._checks_fsdp.runs_on`
gives them, each case in a process group (:func:`~mixprec.testing._strategies.process_group`); a family
the backend builds no objects for (``Backend.strategy_families``), or that cannot run on the device (no
torch.distributed backend for its type), has no cases, and the report says why.
``mixprec check`` and the pytest class iterate the very same list, so the two forms cannot drift
apart, and pytest shows one test per case.

A precision without a contract gets one case, ``contract_declared``, which fails and says how to
declare one. Any other case is *skipped*, never passed, when the device is absent (as the backend's
own policy counts its devices; for the core's every-device backend, as the resolver counts them: the
backends for the device type, or else torch's device module), when the backend's policy says the
precision cannot run there, or when the backend or the contract declares the check's capability
unsupported, or when the backend builds no objects for the target (``Backend.targets``); the reason is
reported with it. A case of a check the backend lists in ``Backend.expected_failed_checks`` is an
expected failure when it fails (``xfailed``, with the backend's reason) and a failure when it passes
("unexpectedly passed"), strictly, as pytest's ``xfail(strict=True)``. A run in which every case was
skipped is not a failure (``mixprec check`` exits 0, so CI on a machine without the device stays
green), and its report says plainly that nothing was verified.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Literal

import torch

import mixprec
from mixprec._backend import ANY_DEVICE, TARGETS, Availability, Backend, ContractSource, Device, StrategyFamily, Target
from mixprec._contract import Contract
from mixprec._errors import BackendNotFoundError, DeviceError, PluginError, PrecisionError, UnknownPrecisionError
from mixprec._policies import current
from mixprec._presence import absence
from mixprec._registry import Registered, Snapshot
from mixprec._resolver import Record
from mixprec.testing import _torch_flags as torch_flags
from mixprec.testing._base import Check, CheckFailed, CheckSkipped, Subject, undeclared_contract
from mixprec.testing._checks import CHECKS
from mixprec.testing._checks_fsdp import runs_on
from mixprec.testing._checks_object import contract_declared
from mixprec.testing._contract import CAPABILITIES
from mixprec.testing._global_state import isolated
from mixprec.testing._strategies import families, process_group, unreduced

__all__ = ["Case", "Outcome", "Report", "Result", "Suite", "run"]

Outcome = Literal["passed", "failed", "skipped", "xfailed"]


@dataclass(frozen=True)
class Result:
    """What one case came to; ``detail`` is the failure, the reason for the skip, or why a failure was expected."""

    precision: str
    check: str
    outcome: Outcome
    detail: str = ""
    #: The object the case checked: Fabric's or the Trainer's.
    target: Target = "fabric"
    #: The strategy family of the object the case checked ("fsdp"), or None for the ordinary strategies' object.
    family: StrategyFamily | None = None

    @property
    def id(self) -> str:
        """The case's id (:attr:`Case.id`): ``precision:check``, ``trainer/precision:check`` for the Trainer's."""
        return case_id(self.target, self.precision, self.check, self.family)


def case_id(target: str, precision: str, check: str, family: str | None = None) -> str:
    """``precision:check`` for Fabric's object, ``trainer/precision:check`` for the Trainer's; for a strategy family's
    objects ``fsdp/precision:check`` (Fabric's) and ``trainer-fsdp/precision:check`` (the Trainer's)."""
    return f"{subject_label(target, family)}{precision}:{check}"


def subject_label(target: str, family: str | None) -> str:
    """The prefix of a case id that names its object: "", "trainer/", "fsdp/" or "trainer-fsdp/"."""
    if family is None:
        return "" if target == "fabric" else f"{target}/"
    return f"{family}/" if target == "fabric" else f"{target}-{family}/"


class Case:
    """One check of one precision of the backend: run it, or ask why it is skipped."""

    def __init__(
        self, subject: Subject, check: Check, skip_reason: str | None, expected_failure: str | None = None
    ) -> None:
        self.subject = subject
        self.check = check
        #: Why the case does not run here; None when it runs.
        self.skip_reason = skip_reason
        #: The backend's reason for failing this check knowingly (``Backend.expected_failed_checks``), or None.
        self.expected_failure = expected_failure

    @property
    def precision(self) -> str:
        """The precision this case checks."""
        return self.subject.precision

    @property
    def target(self) -> Target:
        """The object this case checks: Fabric's ("fabric") or the Trainer's ("trainer")."""
        return self.subject.target

    @property
    def id(self) -> str:
        """``precision:check`` for Fabric's object, ``trainer/precision:check`` for the Trainer's, ``fsdp/`` and
        ``trainer-fsdp/`` before them for the FSDP objects; pytest shows it."""
        return case_id(self.target, self.precision, self.check.name, self.subject.family)

    def execute(self) -> None:
        """Run the check: raise :class:`CheckSkipped`, :class:`CheckFailed` or the backend's own error, or pass."""
        if self.skip_reason is not None:
            raise CheckSkipped(self.skip_reason)
        contract = self.subject.contract
        if contract is None:  # its only case is contract_declared
            raise CheckFailed(undeclared_contract(self.subject))
        with one_thread(), isolated(self.subject.device.type), torch_flags.restored(), self._process_group():
            self.check(self.subject, contract)

    def _process_group(self) -> AbstractContextManager[None]:
        # FSDP's ShardedGradScaler reduces over a process group: see mixprec.testing._strategies.process_group.
        return nullcontext() if self.subject.family is None else process_group()

    def run(self) -> Result:
        """Execute the case and record the outcome; an unexpected exception is a failure.

        An expected failure that fails is ``xfailed``; one that passes is ``failed`` ("unexpectedly passed").
        """
        try:
            self.execute()
        except CheckSkipped as exc:
            return self._result("skipped", str(exc))
        except CheckFailed as exc:
            return self._failed(str(exc))
        except Exception as exc:
            # The backend's own error says what it did; the check's promise says what was wanted.
            return self._failed(f"raised {type(exc).__name__}: {exc}; the contract wants: {self.check.summary}")
        if self.expected_failure is not None:
            return self._result("failed", self.unexpected_pass())
        return self._result("passed")

    def unexpected_pass(self) -> str:
        """The failure of an expected failure that passed: what passed, and what to change."""
        return (
            f"unexpectedly passed: backend {self.subject.backend.name!r} lists {self.check.name!r} in"
            f" expected_failed_checks ({self.expected_failure}), but it passes: remove it from that list"
        )

    def _failed(self, detail: str) -> Result:
        if self.expected_failure is not None:
            return self._result("xfailed", f"expected failure: {self.expected_failure} (it failed: {detail})")
        return self._result("failed", detail)

    def _result(self, outcome: Outcome, detail: str = "") -> Result:
        return Result(self.precision, self.check.name, outcome, detail, self.target, self.subject.family)

    def __repr__(self) -> str:
        return f"Case({self.subject.backend.name!r}, {self.id!r})"


@dataclass(frozen=True)
class Report:
    """The results of one run; ``str()`` is the readable report, :meth:`to_json` the machine-readable one."""

    backend: str
    device: str
    distribution: str | None
    version: str | None
    availability: Mapping[str, Availability]
    results: tuple[Result, ...]
    #: Where each precision's contract comes from: "standard" (the core's), "declared" (the backend's) or "undeclared".
    contracts: Mapping[str, ContractSource] = field(default_factory=dict)
    #: The strategy families the run skipped, each with the reason: those the backend builds no objects for, or that
    #: cannot run on the device (torch.distributed has no backend for its type).
    skipped_strategies: Mapping[str, str] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> int:
        """How many cases came to ``outcome``."""
        return sum(r.outcome == outcome for r in self.results)

    @property
    def failures(self) -> tuple[Result, ...]:
        return tuple(r for r in self.results if r.outcome == "failed")

    @property
    def ok(self) -> bool:
        """No case failed (a run where every case was skipped is ok, and says so)."""
        return not self.failures

    def summary(self) -> str:
        """The counts on one line, saying so when nothing beyond the contracts was verified."""
        passed, failed, skipped = self.count("passed"), self.count("failed"), self.count("skipped")
        line = f"{passed} passed, {failed} failed, {skipped} skipped"
        xfailed = self.count("xfailed")
        if xfailed:
            line += f", {xfailed} expected failures"
        verified = [r for r in self.results if r.outcome != "skipped" and r.check != "contract_declared"]
        if not verified and not failed:
            line += f": nothing was verified on {self.device} here beyond the contracts (see the reasons above)"
        return line

    def __str__(self) -> str:
        origin = f" from {self.distribution} {self.version}" if self.distribution else ""
        lines = [f"mixprec check: backend {self.backend!r}{origin}, on {self.device}"]
        labels = {"passed": "passed ", "failed": "FAILED ", "skipped": "skipped", "xfailed": "xfailed"}
        for precision, availability in self.availability.items():
            reason = f": {availability.reason}" if availability.reason else ""
            contract = f"; contract: {self.contracts[precision]}" if precision in self.contracts else ""
            lines += ["", f"{precision} ({availability.status}{reason}{contract})"]
            for r in self.results:
                if r.precision == precision:
                    name = f"{subject_label(r.target, r.family)}{r.check}"
                    lines.append(f"  {labels[r.outcome]} {name}" + (f": {r.detail}" if r.detail else ""))
        for family, reason in self.skipped_strategies.items():
            lines += ["", f"strategy={family!r}: skipped: {reason}"]
        lines += ["", self.summary()]
        return "\n".join(lines)

    def to_json(self) -> str:
        """The report as JSON: the backend, the counts, each precision's availability and contract, every result."""
        payload = {
            "backend": self.backend,
            "device": self.device,
            "distribution": self.distribution,
            "version": self.version,
            "ok": self.ok,
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "xfailed": self.count("xfailed"),
            "precisions": {p: {**asdict(a), "contract": self.contracts.get(p)} for p, a in self.availability.items()},
            "results": [{"id": r.id, **asdict(r)} for r in self.results],
            "skipped_strategies": dict(self.skipped_strategies),
        }
        return json.dumps(payload, indent=2)


class Suite:
    """The conformance suite for one installed backend on one device: its cases, ready to run.

    Args:
        backend: the backend's name, as ``mixprec list`` shows it.
        device: the device to run on; by default the backend's device type ("cpu" for the core's
            precisions, which serve every device type).
        precision: run only this precision; by default every precision the backend offers.
        target: check only the objects for this target, "fabric" or "trainer"; by default both.
        strategy: check only the objects for this strategy family, "fsdp", or "none" for the objects of the
            ordinary strategies (``strategy=None``); by default all of them. A family the backend builds no objects
            for (``Backend.strategy_families``) has no cases: the report names it, with the reason
            (:attr:`Report.skipped_strategies`).

    Raises:
        PrecisionError: no backend of that name is installed, the device is not one it serves, it does
            not offer the precision, the target or strategy family is unknown, or it or a contract it declares names
            capabilities or expected failures of checks the suite does not know.
    """

    def __init__(
        self,
        backend: str,
        device: str | None = None,
        precision: str | None = None,
        target: str | None = None,
        strategy: str | None = None,
    ) -> None:
        snap, caches = current()
        registered = _find(snap, backend)
        self.backend: Backend = registered.backend
        self.distribution = registered.plugin.distribution
        self.version = registered.plugin.version
        self.device = _device(self.backend, device)
        _check_capabilities(self.backend)
        _check_expected_failures(self.backend)
        targets = _targets(target)
        chosen = families(strategy)
        #: The strategy families this run would check but the backend builds no objects for, each with the reason.
        self.unserved: Mapping[str, str] = MappingProxyType(
            {
                f: reason
                for f in chosen
                if f is not None and (reason := _unserved(self.backend, f) or unreduced(self.device.type)) is not None
            }
        )
        missing = absence(registered, self.device, snap, caches)
        # A count that fails is no absence: the policy is broken, and its checks fail with its error.
        absent = missing.reason if missing is not None and missing.status == "unavailable" else None
        records = {r.precision: r for r in mixprec.available(str(self.device)) if r.backend == backend}
        self.availability: Mapping[str, Availability] = MappingProxyType(
            {p: _availability(records.get(p)) for p in _precisions(self.backend, precision)}
        )
        cases: list[Case] = []
        self.subjects: tuple[Subject, ...] = tuple(
            Subject(self.backend, self.device, name, availability, t, family)
            for family in chosen
            if family not in self.unserved
            for t in targets
            for name, availability in self.availability.items()
        )
        expected = self.backend.expected_failed_checks
        for subject in self.subjects:
            contract = subject.contract
            for check in CHECKS:
                if subject.target not in check.targets or not runs_on(check, subject):
                    continue
                if check is contract_declared:
                    # A description either declares a contract or not, whatever the device: never skipped.
                    cases.append(Case(subject, check, None, expected.get(check.name)))
                elif contract is not None and check.applies(contract):
                    skip = (
                        _other_target(self.backend, subject)
                        or _skip_reason(subject, absent)
                        or _unsupported(self.backend, contract, check)
                    )
                    cases.append(Case(subject, check, skip, expected.get(check.name)))
        self.cases: tuple[Case, ...] = tuple(cases)

    def run(self) -> Report:
        """Run every case in order and report the results.

        The cases of the strategy families share one process group (starting one takes about 10 ms), which each
        case would otherwise start and destroy.
        """
        with one_thread():  # once for the run, rather than once per case
            results = tuple(self._results())
        contracts = MappingProxyType({s.precision: self.backend.contract_source(s.precision) for s in self.subjects})
        return Report(
            self.backend.name,
            str(self.device),
            self.distribution,
            self.version,
            self.availability,
            results,
            contracts,
            self.unserved,
        )

    def _results(self) -> Iterator[Result]:
        # The families' cases come after the others (see __init__): the group opens at the first and stays open.
        with ExitStack() as stack:
            grouped = False
            for case in self.cases:
                if case.subject.family is not None and not grouped:
                    stack.enter_context(process_group())
                    grouped = True
                yield case.run()


def run(
    backend: str,
    device: str | None = None,
    precision: str | None = None,
    target: str | None = None,
    strategy: str | None = None,
) -> Report:
    """Run the conformance suite against the installed backend ``backend``; see :class:`Suite`."""
    return Suite(backend, device, precision, target, strategy).run()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU kernels on one thread, as they are put back after.

    The suite's model is tiny: threads only add their start-up, and on a busy machine (CI) every parallel
    region waits for a thread that is not running, which made a check several times slower.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _find(snap: Snapshot, name: str) -> Registered:
    found = snap.backends.get(name)
    if found is not None:
        return found
    installed = ", ".join(sorted(snap.backends)) or "none"
    failed = "".join(f" {failure}." for failure in snap.failures)
    raise BackendNotFoundError(
        f"No installed backend is named {name!r}. Installed backends: {installed}.{failed}"
        " `mixprec list` shows them all."
    )


def _device(backend: Backend, text: str | None) -> Device:
    if text is None:
        return Device("cpu" if backend.device_type == ANY_DEVICE else backend.device_type)
    device = Device.parse(text)
    if backend.device_type not in (ANY_DEVICE, device.type):
        raise DeviceError(
            f"Backend {backend.name!r} serves device type {backend.device_type!r}, not {device.type!r}:"
            f" leave the device out, or pass one such as {backend.device_type!r}."
        )
    return device


def _precisions(backend: Backend, precision: str | None) -> tuple[str, ...]:
    if precision is None:
        return backend.precisions
    name = mixprec.ALIASES.get(precision, precision)
    if name not in backend.precisions:
        raise UnknownPrecisionError(
            f"Backend {backend.name!r} does not offer {precision!r}; it offers {', '.join(backend.precisions)}."
        )
    return (name,)


def _availability(record: Record | None) -> Availability:
    if record is None:
        return Availability("failed", "mixprec.available() has no record of it")
    return Availability(record.status, record.reason)  # type: ignore[arg-type]


def _check_capabilities(backend: Backend) -> None:
    declared = {"Backend.unsupported": backend.unsupported}
    declared.update({f"the contract of {p!r}": c.unsupported for p, c in backend.contracts.items()})
    for where, unsupported in declared.items():
        unknown = sorted(set(unsupported) - set(CAPABILITIES))
        if unknown:
            raise PluginError(
                f"Backend {backend.name!r} declares unknown capabilities {unknown} unsupported in {where}; the"
                f" capabilities mixprec.testing knows are {sorted(CAPABILITIES)}. Fix the names there."
            )


def _targets(target: str | None) -> tuple[Target, ...]:
    if target is None:
        return TARGETS
    if target not in TARGETS:
        raise PrecisionError(f"Unknown target {target!r}: use 'fabric' or 'trainer', or leave it out for both.")
    return (target,)


def _check_expected_failures(backend: Backend) -> None:
    known = {check.name for check in CHECKS}
    unknown = sorted(set(backend.expected_failed_checks) - known)
    if unknown:
        raise PluginError(
            f"Backend {backend.name!r} lists {unknown} in expected_failed_checks, which are not checks of"
            " mixprec.testing; fix the names there (mixprec.testing.CHECKS lists every check by name)."
        )


def _other_target(backend: Backend, subject: Subject) -> str | None:
    if backend.serves(subject.target):
        return None
    only = " and ".join(repr(t) for t in backend.targets)
    return f"backend {backend.name!r} builds objects only for target={only} (Backend.targets), not {subject.target!r}"


def _unserved(backend: Backend, family: str) -> str | None:
    if family in backend.strategy_families:
        return None
    return (
        f"backend {backend.name!r} builds no objects for strategy={family!r} (its Backend.strategy_families is"
        f" {backend.strategy_families!r})"
    )


def _skip_reason(subject: Subject, absent: str | None) -> str | None:
    if absent is not None:
        return absent
    availability = subject.availability
    if availability.status == "unavailable":
        return f"backend {subject.backend.name!r} says it cannot run here: {availability.reason}"
    # "failed" is not a skip: every check then fails with the policy's error.
    return None


def _unsupported(backend: Backend, contract: Contract, check: Check) -> str | None:
    capability = check.capability
    if capability is None:
        return None
    if capability in backend.unsupported:
        return f"backend declares {capability!r} unsupported: {backend.unsupported[capability]}"
    if capability in contract.unsupported:
        return f"the precision's contract declares {capability!r} unsupported: {contract.unsupported[capability]}"
    return None

"""Running the checks against one installed backend on one device, and the report of the run.

A run is a flat list of :class:`Case` objects, one per (precision, check), decided from the backend's
description and the contract table before anything runs. ``mixprec check`` and the pytest class
iterate the very same list, so the two forms cannot drift apart, and pytest shows one test per case.

A case is *skipped*, never passed, when the device is absent, when the backend's policy says the
precision cannot run there, when the precision has no contract, or when the backend declares the
check's capability unsupported; the reason is reported with it. A run in which every case was
skipped is not a failure (``mixprec check`` exits 0, so CI on a machine without the device stays
green), and its report says plainly that nothing was verified.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Literal

import torch

import mixprec
from mixprec._backend import ANY_DEVICE, Availability, Backend, Device
from mixprec._errors import BackendNotFoundError, DeviceError, PluginError, UnknownPrecisionError
from mixprec._registry import Registered, registry
from mixprec._resolver import Record
from mixprec.testing._checks import CHECKS, Check, CheckFailed, CheckSkipped, Subject, isolated
from mixprec.testing._contract import CAPABILITIES, CONTRACTS

__all__ = ["Case", "Outcome", "Report", "Result", "Suite", "run"]

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Result:
    """What one case came to; ``detail`` is the failure or the reason for the skip."""

    precision: str
    check: str
    outcome: Outcome
    detail: str = ""


class Case:
    """One check of one precision of the backend: run it, or ask why it is skipped."""

    def __init__(self, subject: Subject, check: Check, skip_reason: str | None) -> None:
        self.subject = subject
        self.check = check
        #: Why the case does not run here; None when it runs.
        self.skip_reason = skip_reason

    @property
    def precision(self) -> str:
        return self.subject.precision

    @property
    def id(self) -> str:
        """``precision:check``, the name pytest shows."""
        return f"{self.precision}:{self.check.name}"

    def execute(self) -> None:
        """Run the check: raise :class:`CheckSkipped`, :class:`CheckFailed` or the backend's own error, or pass."""
        if self.skip_reason is not None:
            raise CheckSkipped(self.skip_reason)
        contract = self.subject.contract
        assert contract is not None  # a precision without a contract has a skip reason
        with isolated(self.subject.device.type):
            self.check.function(self.subject, contract)

    def run(self) -> Result:
        """Execute the case and record the outcome; an unexpected exception is a failure."""
        try:
            self.execute()
        except CheckSkipped as exc:
            return Result(self.precision, self.check.name, "skipped", str(exc))
        except CheckFailed as exc:
            return Result(self.precision, self.check.name, "failed", str(exc))
        except Exception as exc:
            return Result(self.precision, self.check.name, "failed", f"raised {type(exc).__name__}: {exc}")
        return Result(self.precision, self.check.name, "passed")

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

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def failures(self) -> tuple[Result, ...]:
        return tuple(r for r in self.results if r.outcome == "failed")

    @property
    def ok(self) -> bool:
        """No case failed (a run where every case was skipped is ok, and says so)."""
        return not self.failures

    def summary(self) -> str:
        passed, failed, skipped = self.count("passed"), self.count("failed"), self.count("skipped")
        line = f"{passed} passed, {failed} failed, {skipped} skipped"
        if passed == failed == 0:
            line += f": nothing was verified on {self.device} here (see the reasons above)"
        return line

    def __str__(self) -> str:
        origin = f" from {self.distribution} {self.version}" if self.distribution else ""
        lines = [f"mixprec check: backend {self.backend!r}{origin}, on {self.device}"]
        labels = {"passed": "passed ", "failed": "FAILED ", "skipped": "skipped"}
        for precision, availability in self.availability.items():
            reason = f": {availability.reason}" if availability.reason else ""
            lines += ["", f"{precision} ({availability.status}{reason})"]
            for r in self.results:
                if r.precision == precision:
                    lines.append(f"  {labels[r.outcome]} {r.check}" + (f": {r.detail}" if r.detail else ""))
        lines += ["", self.summary()]
        return "\n".join(lines)

    def to_json(self) -> str:
        payload = {
            "backend": self.backend,
            "device": self.device,
            "distribution": self.distribution,
            "version": self.version,
            "ok": self.ok,
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "precisions": {p: asdict(a) for p, a in self.availability.items()},
            "results": [asdict(r) for r in self.results],
        }
        return json.dumps(payload, indent=2)


class Suite:
    """The conformance suite for one installed backend on one device: its cases, ready to run.

    Args:
        backend: the backend's name, as ``mixprec list`` shows it.
        device: the device to run on; by default the backend's device type ("cpu" for the core's
            precisions, which serve every device type).
        precision: run only this precision; by default every precision the backend offers.

    Raises:
        PrecisionError: no backend of that name is installed, the device is not one it serves, it does
            not offer the precision, or it declares capabilities the suite does not know.
    """

    def __init__(self, backend: str, device: str | None = None, precision: str | None = None) -> None:
        registered = _find(backend)
        self.backend: Backend = registered.backend
        self.distribution = registered.plugin.distribution
        self.version = registered.plugin.version
        self.device = _device(self.backend, device)
        _check_capabilities(self.backend)
        absent = _absent(self.device)
        records = {r.precision: r for r in mixprec.available(str(self.device)) if r.backend == backend}
        self.availability: Mapping[str, Availability] = MappingProxyType(
            {p: _availability(records.get(p)) for p in _precisions(self.backend, precision)}
        )
        cases: list[Case] = []
        for name, availability in self.availability.items():
            subject = Subject(self.backend, self.device, name, availability)
            skip = _skip_reason(subject, absent)
            for check in CHECKS:
                if subject.contract is None or check.applies(subject.contract):
                    cases.append(Case(subject, check, skip or _unsupported(self.backend, check)))
        self.cases: tuple[Case, ...] = tuple(cases)

    def run(self) -> Report:
        """Run every case in order and report the results."""
        results = tuple(case.run() for case in self.cases)
        return Report(self.backend.name, str(self.device), self.distribution, self.version, self.availability, results)


def run(backend: str, device: str | None = None, precision: str | None = None) -> Report:
    """Run the conformance suite against the installed backend ``backend``; see :class:`Suite`."""
    return Suite(backend, device, precision).run()


def _find(name: str) -> Registered:
    snap = registry.snapshot()
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
    unknown = sorted(set(backend.unsupported) - set(CAPABILITIES))
    if unknown:
        raise PluginError(
            f"Backend {backend.name!r} declares unknown capabilities {unknown} unsupported; the capabilities"
            f" mixprec.testing knows are {sorted(CAPABILITIES)}. Fix the names in Backend.unsupported."
        )


def _absent(device: Device) -> str | None:
    """Why ``device`` is not present in this process, or None when it is."""
    if device.type == "cpu":
        return None
    count = getattr(getattr(torch, device.type, None), "device_count", None)
    if callable(count):
        n = int(count())
        if n == 0:
            return f"no {device.type} device here (torch.{device.type}.device_count() is 0)"
        if device.index is not None and device.index >= n:
            return f"{device} is not here: this machine has {n} {device.type} device(s)"
        return None
    try:
        torch.empty(0, device=str(device))
    except Exception as exc:
        return f"{device} is not usable here: {str(exc).splitlines()[0]}"
    return None


def _skip_reason(subject: Subject, absent: str | None) -> str | None:
    if absent is not None:
        return absent
    if subject.contract is None:
        return f"mixprec.testing has no contract for {subject.precision!r}; it knows {', '.join(CONTRACTS)}"
    availability = subject.availability
    if availability.status == "unavailable":
        return f"backend {subject.backend.name!r} says it cannot run here: {availability.reason}"
    # "failed" is not a skip: every check then fails with the policy's error.
    return None


def _unsupported(backend: Backend, check: Check) -> str | None:
    if check.capability is not None and check.capability in backend.unsupported:
        return f"backend declares {check.capability!r} unsupported: {backend.unsupported[check.capability]}"
    return None

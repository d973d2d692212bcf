"""``explain``: every candidate for a request, what its policy said, and why one was chosen or passed over.

``explain`` resolves exactly as ``get_precision`` does (the same inputs, presence checks,
selection and "auto") but builds nothing: it reports. It raises only for input that names
nothing (a malformed device, an unknown precision); a request that cannot be served is an
:class:`Explanation` whose ``error`` says why. For "auto" it also lists the candidates of the
precisions "auto" never chooses (:data:`~mixprec._auto.NEVER_AUTO`), so that a user sees that
"fp8-mixed" could run here and why "auto" left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixprec._auto import NEVER_AUTO, Auto, auto, best_device
from mixprec._backend import ANY_DEVICE, Availability, ContractSource, Device
from mixprec._inputs import arguments, canonical_precision, requested_device
from mixprec._policies import Caches, current
from mixprec._registry import Registered, Snapshot
from mixprec._selection import Choice, select

__all__ = ["Candidate", "Explanation", "explain"]


@dataclass(frozen=True)
class Candidate:
    """One backend considered for a request, with what its policy said.

    ``contract`` says where the precision's contract comes from: "standard" (the core's),
    "declared" (the backend's own ``Backend.contracts``) or "undeclared".
    """

    backend: str
    precision: str
    device: str
    priority: int
    status: str
    reason: str
    contract: ContractSource
    distribution: str | None
    chosen: bool = False
    note: str = ""


@dataclass(frozen=True)
class Explanation:
    """Every candidate considered for a request and why one was chosen; ``str()`` reads as a report."""

    request: str
    device: str
    precision: str | None
    backend: str | None
    candidates: tuple[Candidate, ...]
    rule: str
    error: str | None = None

    def __str__(self) -> str:
        lines = [f"mixprec: {self.request} on {self.device}"]
        for c in self.candidates:
            mark = "->" if c.chosen else "  "
            reason = f": {c.reason}" if c.reason else ""
            note = f" [{c.note}]" if c.note else ""
            lines.append(
                f" {mark} {c.precision:<11} {c.backend:<12} priority {c.priority:>5}  {c.status}{reason}"
                f" ({c.contract} contract){note}"
            )
        lines.append(f"rule: {self.rule}")
        if self.error is not None:
            lines.append(f"no choice: {self.error}")
        else:
            lines.append(f"chosen: {self.precision!r} from backend {self.backend!r}")
        return "\n".join(lines)


def explain(precision: str | int = "auto", device: Any = None, *, backend: str | None = None) -> Explanation:
    """Every candidate for ``precision`` on ``device``, what its policy said, and which one would be chosen."""
    precision, backend, _, _ = arguments(precision, backend, "fabric", None)
    snap, caches = current()
    name = canonical_precision(precision, snap)
    dev = requested_device(device, snap) or best_device(snap, caches)
    if name == "auto":
        return _explain_auto(snap, caches, auto(snap, caches, dev, backend), dev)
    choice = select(snap, caches, name, dev, backend)
    candidates = tuple(
        _candidate(r, a, name, dev, r is choice.chosen, _note(choice, r, a)) for r, a in choice.candidates
    )
    return Explanation(
        repr(name),
        str(dev),
        name if choice.chosen else None,
        choice.chosen.backend.name if choice.chosen else None,
        candidates,
        choice.rule,
        None if choice.error is None else str(choice.error),
    )


def _explain_auto(snap: Snapshot, caches: Caches, found: Auto, device: Device) -> Explanation:
    candidates: list[Candidate] = []
    for i, (precision, choice) in enumerate(found.steps):
        for reg, a in choice.candidates:
            if found.taken is not None and i > found.taken:
                note = f"not needed: auto took {found.steps[found.taken][0]!r}"
            elif reg is choice.chosen and i != found.taken:
                note = "selected, but slower than fp32 here: auto passes it over"
            else:
                note = _note(choice, reg, a)
            candidates.append(_candidate(reg, a, precision, device, i == found.taken and reg is choice.chosen, note))
    if found.steps:
        for precision, why in NEVER_AUTO.items():
            for reg, a in select(snap, caches, precision, device, None).candidates:
                candidates.append(_candidate(reg, a, precision, device, False, f"never chosen by auto: {why}"))
    if found.taken is None:
        assert found.error is not None
        return Explanation("'auto'", str(device), None, None, tuple(candidates), found.rule, str(found.error))
    precision, choice = found.steps[found.taken]
    assert choice.chosen is not None
    return Explanation("'auto'", str(device), precision, choice.chosen.backend.name, tuple(candidates), found.rule)


def _note(choice: Choice, reg: Registered, a: Availability) -> str:
    """Why a candidate was passed over (empty for the chosen one)."""
    if reg is choice.chosen:
        return ""
    if not a.usable:
        return "cannot run here"
    if choice.source is not None:
        return f"not the one {choice.source} names"
    if reg.backend.device_type == ANY_DEVICE and any(r.backend.device_type != ANY_DEVICE for r, _ in choice.candidates):
        return "fallback: a backend for the device type offers it"
    return f"outranked by {choice.chosen.backend.name!r}" if choice.chosen is not None else ""


def _candidate(reg: Registered, a: Availability, precision: str, device: Device, chosen: bool, note: str) -> Candidate:
    return Candidate(
        reg.backend.name,
        precision,
        str(device),
        reg.backend.priority,
        a.status,
        a.reason,
        reg.backend.contract_source(precision),
        reg.plugin.distribution,
        chosen,
        note,
    )

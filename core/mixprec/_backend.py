"""The data a plugin uses to describe a backend, and the data the core hands to a backend's policy.

A backend describes itself with plain data (:class:`Backend`); the code that probes the hardware
and builds precision objects lives in its *policy module*, named by a dotted string and imported
only when a backend is first asked something. That keeps loading a plugin cheap: neither the
entry-point module nor this file imports torch or lightning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from mixprec._contract import STANDARD_CONTRACTS, Contract, capability_reasons
from mixprec._errors import DeviceError, PluginError, shown

__all__ = [
    "ALIASES",
    "ANY_DEVICE",
    "MAX_DEVICE_INDEX",
    "Availability",
    "Backend",
    "ContractSource",
    "Device",
    "Request",
    "STRATEGY_FAMILIES",
    "Status",
    "StrategyFamily",
    "TARGETS",
    "Target",
]

#: ``Backend.device_type`` of a backend that serves every device type (the core's "true" precisions).
ANY_DEVICE = "*"
#: Lightning's aliases, with Lightning's meaning. They and "auto" are not names a backend can offer.
ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}
_RESERVED_PRECISIONS = frozenset({*ALIASES, "auto"})

Status = Literal["available", "slow", "unavailable", "failed"]

#: The objects a backend can build: for Lightning Fabric (``target="fabric"``) and the Lightning Trainer.
Target = Literal["fabric", "trainer"]
TARGETS: tuple[Target, ...] = ("fabric", "trainer")
#: The Lightning strategies that take a precision class of their own, by family (see
#: ``mixprec.precision.strategy_family``): "fsdp" for Lightning's FSDP strategies.
StrategyFamily = Literal["fsdp"]
STRATEGY_FAMILIES: tuple[StrategyFamily, ...] = ("fsdp",)
#: Where the contract of a precision a backend offers comes from (see :meth:`Backend.contract_source`).
ContractSource = Literal["standard", "declared", "undeclared"]

_NAME = re.compile(r"[a-z][a-z0-9_.-]*\Z")
_DEVICE_TYPE = re.compile(r"[a-z_][a-z0-9_]*\Z")
_PRECISION = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_DEVICE = re.compile(r"([a-z_][a-z0-9_]*)(?::([0-9]+))?\Z")
_STATUSES = ("available", "slow", "unavailable", "failed")

#: The largest device index a :class:`Device` takes (torch's own index type is smaller still).
MAX_DEVICE_INDEX = 2**63 - 1
_MAX_INDEX_DIGITS = len(str(MAX_DEVICE_INDEX))


@dataclass(frozen=True)
class Device:
    """A device type and an optional index (None: the current device of that type).

    Both are checked on construction, so a device built from a string, a ``torch.device`` or an
    accelerator is always well formed: a lower-case type and a non-negative index of at most
    ``MAX_DEVICE_INDEX`` (2**63 - 1). Whether that device exists here is the resolver's question.
    """

    type: str
    index: int | None = None

    def __post_init__(self) -> None:
        kind: Any = self.type
        index: Any = self.index
        if not isinstance(kind, str) or not _DEVICE_TYPE.match(kind):
            raise DeviceError(f"Device type {shown(kind)} is not a torch device type such as 'cpu' or 'cuda'.")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise DeviceError(f"Device index {shown(index)} of {shown(kind)} must be an int or None.")
        if index is not None and not 0 <= index <= MAX_DEVICE_INDEX:
            raise DeviceError(
                f"Device index {shown(index)} of {shown(kind)} is out of range: an index is a small"
                " non-negative integer such as 0 or 1."
            )
        # Exact built-in types: a subclass's own __eq__ or __hash__ must not steer the cache keys.
        object.__setattr__(self, "type", str.__str__(kind))
        object.__setattr__(self, "index", None if index is None else int.__int__(index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> Device:
        """Parse ``"cuda"``, ``"cuda:1"`` and the like; anything else is a :class:`DeviceError`."""
        match = _DEVICE.match(text)
        if match is None:
            hint = ""
            if _DEVICE.match(text.strip().lower()):
                hint = f"; did you mean {text.strip().lower()!r}?"
            raise DeviceError(
                f"Malformed device string {shown(text)}: expected a device type with an optional index,"
                f" such as 'cpu', 'cuda' or 'cuda:1'{hint}"
            )
        index = match.group(2)
        if index is not None and len(index) > _MAX_INDEX_DIGITS:
            # Checked before int(): Python refuses to convert strings of more than 4300 digits.
            raise DeviceError(
                f"Device index in {shown(text)} ({len(index)} digits) is out of range: an index is a small"
                " non-negative integer such as 0 or 1."
            )
        return cls(match.group(1), None if index is None else int(index))


@dataclass(frozen=True)
class Availability:
    """What a backend's policy says of one precision on one device: a status and why.

    Checked on construction: ``status`` is "available", "slow", "unavailable" or "failed", and
    ``reason`` a str, so a policy's mistake is a :class:`PluginError` where it is made.
    """

    status: Status
    reason: str = ""

    def __post_init__(self) -> None:
        status: Any = self.status
        reason: Any = self.reason
        problems = []
        if not isinstance(status, str) or status not in _STATUSES:
            problems.append(f"status {shown(status)} must be one of {', '.join(_STATUSES)}")
        if not isinstance(reason, str):
            problems.append(f"reason {shown(reason)} must be a str")
        if problems:
            raise PluginError("Invalid Availability: " + "; ".join(problems))
        object.__setattr__(self, "status", str.__str__(status))
        object.__setattr__(self, "reason", str.__str__(reason))

    @classmethod
    def available(cls, reason: str = "") -> Availability:
        """It runs here, and well; ``reason`` says why (``mixprec list`` and ``explain`` show it)."""
        return cls("available", reason)

    @classmethod
    def slow(cls, reason: str) -> Availability:
        """Works, but slower than fp32 here (an emulated dtype): never chosen by "auto"."""
        return cls("slow", reason)

    @classmethod
    def unavailable(cls, reason: str) -> Availability:
        """Cannot run here; ``reason`` says why and what to use instead."""
        return cls("unavailable", reason)

    @property
    def usable(self) -> bool:
        """Whether the precision can run here at all: "available" or "slow"."""
        return self.status in ("available", "slow")


@dataclass(frozen=True)
class Request:
    """Everything a policy's ``create`` needs to build one precision object."""

    precision: str
    device: Device
    backend: str
    target: Target = "fabric"
    strategy: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def _check_reasons(value: Any) -> Mapping[str, str] | None:
    """``value`` as a read-only map of check names to non-empty reasons; None if it is not one.

    The names are held to the conformance suite's list where the suite runs (``mixprec.testing``), which
    the core does not import.
    """
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        return None
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class Backend:
    """A backend, described as data by a plugin's ``mixprec_backends()`` hook.

    Args:
        name: unique name users select it by (``backend="cpu"``, ``MIXPREC_BACKEND``, ``mixprec check``).
        device_type: the torch device type it serves, e.g. ``"cuda"``.
        precisions: the canonical precision strings it offers, e.g. ``("bf16-mixed", "16-mixed")``.
        policy: dotted name of the module with ``availability(precision, device)``,
            ``create(request)`` and ``device_count()``; imported at first use only.
        priority: higher wins among backends that offer the same precision on the same device type.
        unsupported: optional capabilities it lacks (names from ``mixprec.testing.CAPABILITIES``), each
            with the reason; an unknown name makes the description invalid.
        description: one line for ``mixprec list``.
        contracts: the contract of each precision it offers that is not standard (not in
            :data:`~mixprec.STANDARD_CONTRACTS`), which the conformance suite holds its objects to.
            A standard precision's contract is the core's and cannot be redefined.
        targets: the objects it builds, of ``("fabric", "trainer")``: by default both, for Fabric and for the Trainer.
            A backend that builds only one says so here (``targets=("fabric",)``): the resolver passes it
            over for the other target and selects the next candidate, and the conformance suite skips the
            other target's checks with this reason.
        strategy_families: the strategy families it builds objects for, of ``("fsdp",)``: by default all of them
            (``get_precision(..., strategy="fsdp")``). A backend that builds none says ``()``: the resolver passes it
            over for ``strategy="fsdp"`` and selects the next candidate, and the conformance suite skips its
            FSDP objects' checks with this reason. An ordinary strategy (DDP, a single device) needs no family.
        expected_failed_checks: the conformance checks (by name, as ``mixprec.testing.CHECKS`` names them)
            it knowingly fails, each with the reason. The suite reports each such case as an expected
            failure, and as a failure if it passes ("unexpectedly passed"), so the list stays true.
    """

    name: str
    device_type: str
    precisions: tuple[str, ...]
    policy: str
    priority: int = 0
    unsupported: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    contracts: Mapping[str, Contract] = field(default_factory=dict)
    targets: tuple[Target, ...] = TARGETS
    strategy_families: tuple[StrategyFamily, ...] = STRATEGY_FAMILIES
    expected_failed_checks: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Plugins are third-party code: check every field's type at run time, whatever the annotations say.
        problems: list[str] = []
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            problems.append(f"name {self.name!r} must be lower case letters, digits, '_', '-' or '.'")
        if not isinstance(self.device_type, str) or not (
            self.device_type == ANY_DEVICE or _DEVICE_TYPE.match(self.device_type)
        ):
            problems.append(f"device_type {self.device_type!r} must be a torch device type such as 'cuda'")
        precisions: Any = self.precisions
        if isinstance(precisions, str) or not isinstance(precisions, (tuple, list)) or not precisions:
            problems.append(f"precisions {precisions!r} must be a non-empty tuple of precision strings")
        else:
            bad = [p for p in precisions if not isinstance(p, str) or not _PRECISION.match(p)]
            reserved = sorted(_RESERVED_PRECISIONS.intersection(precisions))
            if bad:
                problems.append(f"precisions {bad!r} are not valid precision strings")
            elif reserved:
                problems.append(f"precisions {reserved!r} are reserved for 'auto' and Lightning's aliases")
            elif len(set(precisions)) != len(precisions):
                problems.append(f"precisions {precisions!r} lists one precision twice")
            object.__setattr__(self, "precisions", tuple(precisions))
        if not isinstance(self.policy, str) or not _DOTTED.match(self.policy):
            problems.append(f"policy {self.policy!r} must be a dotted module name such as 'mixprec_cpu.policy'")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            problems.append(f"priority {self.priority!r} must be an int")
        unsupported = capability_reasons(self.unsupported)
        if isinstance(unsupported, str):
            problems.append(unsupported)
        else:
            object.__setattr__(self, "unsupported", unsupported)
        description: Any = self.description
        if not isinstance(description, str):
            problems.append(f"description {self.description!r} must be a string")
        contracts: Any = self.contracts
        if not isinstance(contracts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Contract) for k, v in contracts.items()
        ):
            problems.append(f"contracts {contracts!r} must map precision strings to mixprec.Contract")
        else:
            offered = self.precisions if isinstance(self.precisions, tuple) else ()
            standard = sorted(set(contracts) & set(STANDARD_CONTRACTS))
            stray = sorted(set(contracts) - set(offered) - set(standard))
            if standard:
                problems.append(f"contracts {standard!r} are standard precisions, whose contracts the core fixes")
            if stray:
                problems.append(f"contracts {stray!r} are for precisions it does not offer")
            object.__setattr__(self, "contracts", MappingProxyType(dict(contracts)))
        problems += self._check_targets()
        problems += self._check_strategy_families()
        expected = _check_reasons(self.expected_failed_checks)
        if expected is None:
            problems.append(
                f"expected_failed_checks {self.expected_failed_checks!r} must map check names to non-empty reasons"
            )
        else:
            object.__setattr__(self, "expected_failed_checks", expected)
        if problems:
            raise PluginError("Invalid Backend description: " + "; ".join(problems))

    def _check_targets(self) -> list[str]:
        targets: Any = self.targets
        if isinstance(targets, str) or not isinstance(targets, (tuple, list)) or not targets:
            return [f"targets {targets!r} must be a non-empty tuple of {', '.join(map(repr, TARGETS))}"]
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            return [f"targets {unknown!r} are not targets; the targets are {', '.join(map(repr, TARGETS))}"]
        if len(set(targets)) != len(targets):
            return [f"targets {targets!r} lists one target twice"]
        object.__setattr__(self, "targets", tuple(str.__str__(t) for t in targets))
        return []

    def _check_strategy_families(self) -> list[str]:
        families: Any = self.strategy_families
        known = ", ".join(map(repr, STRATEGY_FAMILIES))
        if isinstance(families, str) or not isinstance(families, (tuple, list)):
            return [f"strategy_families {families!r} must be a tuple of {known}, or () for none"]
        unknown = [f for f in families if f not in STRATEGY_FAMILIES]
        if unknown:
            return [f"strategy_families {unknown!r} are not strategy families; the families are {known}"]
        if len(set(families)) != len(families):
            return [f"strategy_families {families!r} lists one family twice"]
        object.__setattr__(self, "strategy_families", tuple(str.__str__(f) for f in families))
        return []

    def serves(self, target: str, family: str | None = None) -> bool:
        """Whether it builds objects for ``target`` ("fabric" or "trainer") and strategy family ``family`` (None for
        the ordinary strategies, which every backend serves)."""
        return target in self.targets and (family is None or family in self.strategy_families)

    def contract(self, precision: str) -> Contract | None:
        """The contract of ``precision`` as this backend offers it: the core's, its own, or None if undeclared."""
        return STANDARD_CONTRACTS.get(precision) or self.contracts.get(precision)

    def contract_source(self, precision: str) -> ContractSource:
        """Where the contract of ``precision`` comes from: the core ("standard"), this backend ("declared"), or nowhere
        ("undeclared")."""
        if precision in STANDARD_CONTRACTS:
            return "standard"
        return "declared" if precision in self.contracts else "undeclared"

"""Selection: which backend serves one precision on one device, and why; or the error saying why none can.

The candidates are the backends that offer the precision on the device type (those serving every
device type included, unless their policy's ``device_types()`` names the types they serve here and
this is not one) and build objects for the target (``Backend.targets``) and the strategy family
(``Backend.strategy_families``). One is selected by the first
rule that applies:

1. ``backend=``, if given: that backend, or an error if it cannot run here;
2. ``MIXPREC_BACKEND``, if it names a candidate: likewise;
3. among the backends for the device type itself (those for every device type, the core's "true"
   precisions, only where there is none), the first usable one ordered by status ("available"
   before "slow"), then priority (higher first), then name (alphabetical).

A candidate's status is its policy's answer, checked against the device's presence
(:mod:`mixprec._presence`). No candidate is ever passed over in silence: the :class:`Choice` keeps
every candidate with its status, and where nothing can be selected the error names each reason,
or the distribution to install when nothing installed offers the precision.
"""

from __future__ import annotations

import difflib
import os
from typing import NamedTuple

from mixprec._backend import ANY_DEVICE, Availability, Device
from mixprec._errors import BackendNotFoundError, BackendUnavailableError, PrecisionError
from mixprec._inputs import KNOWN_DISTRIBUTIONS, KNOWN_OFFERS, PRECISION_DEVICE_TYPES, PRECISION_DISTRIBUTIONS
from mixprec._policies import Caches, serves
from mixprec._presence import probe
from mixprec._registry import Registered, Snapshot

__all__ = ["RANKING", "Choice", "offers", "select", "unknown_backend"]

RANKING = (
    "backends for the device type before those for every device type; among them the first usable"
    " by status (available before slow), then priority (higher first), then name"
)


class Choice(NamedTuple):
    """The outcome of selecting a backend for one precision on one device."""

    candidates: list[tuple[Registered, Availability]]
    chosen: Registered | None
    rule: str
    error: PrecisionError | None
    #: "backend=" or "MIXPREC_BACKEND" when a name, not the ranking, decided.
    source: str | None = None

    @property
    def status(self) -> str | None:
        """The chosen backend's status; None when nothing was chosen."""
        return next((a.status for r, a in self.candidates if r is self.chosen), None)


def candidates(
    snap: Snapshot, caches: Caches, precision: str, device: Device, target: str = "fabric", family: str | None = None
) -> list[Registered]:
    """The backends offering ``precision`` on ``device``'s type that build objects for ``target`` and strategy family
    ``family``; one for every device type only if it serves this one."""
    return [
        r
        for r in snap.for_device_type(device.type)
        if precision in r.backend.precisions and r.backend.serves(target, family) and serves(r, device.type, caches)
    ]


def offers(
    snap: Snapshot,
    caches: Caches,
    name: str,
    precision: str,
    device: Device,
    target: str = "fabric",
    family: str | None = None,
) -> bool:
    """Whether backend ``name`` is among the candidates for ``precision`` on ``device``, ``target`` and ``family``."""
    return any(r.backend.name == name for r in candidates(snap, caches, precision, device, target, family))


def _order(reg: Registered, availability: Availability) -> tuple[int, int, str]:
    return (0 if availability.status == "available" else 1, -reg.backend.priority, reg.backend.name)


def select(
    snap: Snapshot,
    caches: Caches,
    precision: str,
    device: Device,
    backend: str | None,
    target: str = "fabric",
    family: str | None = None,
) -> Choice:
    """Select a backend for ``precision`` on ``device`` by the rules above; ``backend`` is ``backend=``.

    Only backends that build objects for ``target`` and the strategy family ``family`` (None for an ordinary
    strategy) are candidates: one that declares another target alone (``Backend.targets``) or builds no objects
    for the family (``Backend.strategy_families``) is passed over, and the next candidate serves.
    """
    found = candidates(snap, caches, precision, device, target, family)
    probed = [(r, probe(r, precision, device, snap, caches)) for r in found]
    if backend is not None:
        other = _other_target(snap, backend, precision, device, target) or _other_family(
            snap, backend, precision, device, target, family
        )
        if other is not None:
            return Choice(probed, None, f"backend= names {backend!r}", other, "backend=")
    if not found:
        error = _passed_over(snap, caches, precision, device, target, family) or _not_found(snap, precision, device)
        return Choice(probed, None, RANKING, error)
    if backend is not None:
        return _forced(snap, probed, precision, device, backend, "backend=")
    from_env = os.environ.get("MIXPREC_BACKEND", "").strip()
    if from_env and any(r.backend.name == from_env for r, _ in probed):
        return _forced(snap, probed, precision, device, from_env, "MIXPREC_BACKEND")
    # A backend for the device type itself knows the device; one for every device type (the core's
    # "true" precisions) is the fallback where none does, never a way around an honest "slow".
    ranked = [(r, a) for r, a in probed if r.backend.device_type != ANY_DEVICE] or probed
    usable = sorted(((r, a) for r, a in ranked if a.usable), key=lambda pair: _order(*pair))
    if not usable:
        reasons = "; ".join(f"backend {r.backend.name!r}: {a.reason or a.status}" for r, a in probed)
        error = BackendUnavailableError(f"{precision!r} cannot run on {device} here. {reasons}.")
        return Choice(probed, None, RANKING, error)
    return Choice(probed, usable[0][0], RANKING, None)


def _passed_over(
    snap: Snapshot, caches: Caches, precision: str, device: Device, target: str, family: str | None
) -> PrecisionError | None:
    """The error where backends offer ``precision`` here but none builds objects for ``target`` and ``family``."""
    offering = [r for r in candidates_any_target(snap, precision, device) if serves(r, device.type, caches)]
    if not offering:
        return None
    why = []
    for r in offering:
        if not r.backend.serves(target):
            only = " and ".join(repr(t) for t in r.backend.targets)
            why.append(f"{r.backend.name!r} builds objects only for target={only} (its Backend.targets)")
        else:
            why.append(
                f"{r.backend.name!r} builds none for the {family!r} strategies (its Backend.strategy_families is"
                f" {r.backend.strategy_families!r})"
            )
    wanted = f"target={target!r}" + ("" if family is None else f" and the {family!r} strategies")
    fix = (
        "use a strategy that takes an ordinary precision plugin (strategy='ddp'), or a precision a backend"
        f" builds for {family!r} ('bf16-mixed')"
        if family is not None and all(r.backend.serves(target) for r in offering)
        else "ask for a target these backends serve, or install a backend that builds objects for it"
    )
    return BackendNotFoundError(
        f"No installed backend builds {precision!r} objects on {device} for {wanted}: {'; '.join(why)}. To train in"
        f" {precision!r}, {fix}."
    )


def _other_target(snap: Snapshot, name: str, precision: str, device: Device, target: str) -> PrecisionError | None:
    """The error for ``backend=`` naming a backend that offers the precision here but not for ``target``."""
    reg = snap.backends.get(name)
    if reg is None or reg.backend.serves(target) or reg not in candidates_any_target(snap, precision, device):
        return None
    only = " and ".join(repr(t) for t in reg.backend.targets)
    return BackendNotFoundError(
        f"Backend {name!r} builds {precision!r} objects only for target={only}, not for target={target!r}"
        f" (its Backend.targets). Ask it for target={reg.backend.targets[0]!r}, or leave backend unset for"
        f" another backend that serves target={target!r}."
    )


def _other_family(
    snap: Snapshot, name: str, precision: str, device: Device, target: str, family: str | None
) -> PrecisionError | None:
    """The error for ``backend=`` naming a backend that offers the precision here but builds nothing for ``family``."""
    reg = snap.backends.get(name)
    if reg is None or reg.backend.serves(target, family) or reg not in candidates_any_target(snap, precision, device):
        return None
    return BackendNotFoundError(
        f"Backend {name!r} builds no {precision!r} objects for the {family!r} strategies (its Backend.strategy_families"
        f" is {reg.backend.strategy_families!r}). Leave backend unset for another backend that does, or use a"
        " strategy that takes an ordinary precision plugin (such as 'ddp')."
    )


def candidates_any_target(snap: Snapshot, precision: str, device: Device) -> list[Registered]:
    """The backends offering ``precision`` on ``device``'s type, whatever the targets they build for."""
    return [r for r in snap.for_device_type(device.type) if precision in r.backend.precisions]


def _forced(
    snap: Snapshot,
    probed: list[tuple[Registered, Availability]],
    precision: str,
    device: Device,
    name: str,
    source: str,
) -> Choice:
    """The choice when ``source`` names backend ``name``: that backend, or an error saying why not."""
    rule = f"{source} names {name!r}"
    for reg, availability in probed:
        if reg.backend.name == name:
            if availability.usable:
                return Choice(probed, reg, rule, None, source)
            unusable = BackendUnavailableError(
                f"Backend {name!r} (chosen by {source}) cannot run {precision!r} on {device} here:"
                f" {availability.reason or availability.status}."
            )
            return Choice(probed, None, rule, unusable, source)
    if name not in snap.backends:
        return Choice(probed, None, rule, unknown_backend(snap, name, source), source)
    other = snap.backends[name].backend
    offered = ", ".join(r.backend.name for r, _ in probed)
    error = BackendNotFoundError(
        f"Backend {name!r} (from {source}) serves device type {other.device_type!r} with"
        f" {', '.join(other.precisions)}; it does not offer {precision!r} on {device}."
        f" Backends that do: {offered}."
    )
    return Choice(probed, None, rule, error, source)


def unknown_backend(snap: Snapshot, name: str, source: str) -> BackendNotFoundError:
    """The error for a backend name that no installed backend has, with the closest one."""
    close = difflib.get_close_matches(name, sorted(snap.backends), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    shown = repr(name) if len(name) <= 80 else f"{name[:60]!r}... ({len(name)} characters)"
    return BackendNotFoundError(
        f"Unknown backend {shown} (from {source}).{hint} Installed backends: {', '.join(sorted(snap.backends))}."
    )


def _not_found(snap: Snapshot, precision: str, device: Device) -> PrecisionError:
    """Nothing installed offers ``precision`` on ``device``: say what to install, or why what is installed does not.

    The distribution known to serve the precision (``mixprec-fp8`` for "fp8-mixed") is named
    before the one known to serve the device type (``mixprec-cuda`` for "cuda"); a distribution is
    named only where it would serve this precision on this device type, never merely because it is
    the one known for the type.
    """
    others = sorted(
        f"{r.backend.name} ({r.backend.device_type})"
        for r in snap.backends.values()
        if precision in r.backend.precisions
    )
    elsewhere = f" Backends offering it on other devices: {', '.join(others)}." if others else ""
    hints = _install_hints(precision, device.type)
    for distribution in hints:
        for failure in snap.failures:
            if failure.plugin.distribution == distribution:
                return BackendNotFoundError(
                    f"No backend offers {precision!r} on {device}: {distribution} is installed but {failure}."
                )
        for plugin, why in snap.skipped:
            if plugin.distribution == distribution:
                return BackendNotFoundError(
                    f"No backend offers {precision!r} on {device}: {distribution} is installed but not loaded ({why})."
                )
        if not any(r.plugin.distribution == distribution for r in snap.backends.values()):
            if distribution == PRECISION_DISTRIBUTIONS.get(precision):
                return BackendNotFoundError(
                    f"No installed backend offers {precision!r} on {device}: pip install {distribution}.{elsewhere}"
                )
            return BackendNotFoundError(
                f"No backend for device type {device.type!r} is installed: pip install {distribution}"
            )
    if hints:
        verb = "does" if len(hints) == 1 else "do"
        return BackendNotFoundError(f"{' and '.join(hints)} {verb} not offer {precision!r} on {device}.{elsewhere}")
    return BackendNotFoundError(
        f"No installed backend offers {precision!r} on {device}, and mixprec knows no distribution that"
        f" offers it for device type {device.type!r}: a backend for it registers through the"
        f" 'mixprec.backends' entry point (see docs/writing-a-backend.md).{elsewhere}"
    )


def _install_hints(precision: str, device_type: str) -> list[str]:
    """The distributions known to serve ``precision`` on ``device_type``: the precision's own, then the type's."""
    hints = []
    own = PRECISION_DISTRIBUTIONS.get(precision)
    if own is not None and device_type in PRECISION_DEVICE_TYPES.get(own, ()):
        hints.append(own)
    known = KNOWN_DISTRIBUTIONS.get(device_type)
    if known is not None and precision in KNOWN_OFFERS:
        hints.append(known)
    return hints

"""``available``: what every installed backend says of every precision it offers, here.

One :class:`Record` per backend, device type and precision, with the status in force (the
policy's answer checked against the device's presence, as for ``get_precision``), and one per
plugin that failed to load. ``mixprec list`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixprec._backend import ANY_DEVICE, ContractSource, Device
from mixprec._inputs import requested_device
from mixprec._policies import Caches, current, discovered_device_types, serves
from mixprec._presence import probe
from mixprec._registry import Registered

__all__ = ["Record", "available"]


@dataclass(frozen=True)
class Record:
    """One row of :func:`available`: a backend, a device type, a precision and its status here.

    ``contract`` says where the precision's contract comes from: "standard" (the core's),
    "declared" (the backend's own ``Backend.contracts``) or "undeclared"; it is "" in the row of a
    plugin that failed to load.
    """

    backend: str
    device_type: str
    precision: str
    status: str
    reason: str
    contract: ContractSource | str
    priority: int
    distribution: str | None
    version: str | None
    plugin: str


def available(device: Any = None) -> list[Record]:
    """A record per backend x device type x precision with its status here, and one per failed plugin.

    Without ``device`` each backend is asked about the current device of its type (for those
    serving every type, each device type their policy discovered here, else the CPU); with it,
    only backends serving that device are asked, about that device. A device that is not there
    makes every precision on it "unavailable", saying why.
    """
    snap, caches = current()
    dev = requested_device(device, snap)
    records: list[Record] = []
    for reg in sorted(
        snap.backends.values(), key=lambda r: (r.backend.device_type, -r.backend.priority, r.backend.name)
    ):
        if dev is not None and not serves(reg, dev.type, caches):
            continue
        for probe_device, shown_type in _asked(reg, dev, caches):
            for precision in reg.backend.precisions:
                a = probe(reg, precision, probe_device, snap, caches)
                records.append(
                    Record(
                        reg.backend.name,
                        shown_type,
                        precision,
                        a.status,
                        a.reason,
                        reg.backend.contract_source(precision),
                        reg.backend.priority,
                        reg.plugin.distribution,
                        reg.plugin.version,
                        reg.plugin.name,
                    )
                )
    for failure in snap.failures:
        p = failure.plugin
        records.append(Record(p.name, "", "", "failed", failure.error, "", 0, p.distribution, p.version, p.name))
    return records


def _asked(reg: Registered, dev: Device | None, caches: Caches) -> list[tuple[Device, str]]:
    """The devices to ask ``reg`` about, each with the device type its rows show.

    A backend for one device type: the requested device or the current one of its type. A backend
    for every device type: the requested device, else each device type its policy discovered here
    (mixprec-accelerator's accelerators), else the CPU, shown as "*".
    """
    kind = reg.backend.device_type
    if dev is not None:
        return [(dev, kind)]
    if kind != ANY_DEVICE:
        return [(Device(kind), kind)]
    found = discovered_device_types(reg, caches) or ()
    return [(Device(t), t) for t in found] or [(Device("cpu"), kind)]

"""What resolution learns for one registry snapshot: policies, their answers, presence, finished plans.

Each :class:`~mixprec._registry.Snapshot` owns one :class:`Caches`, made empty with it. Registering
or unregistering a plugin publishes a new snapshot, and with it empty caches: nothing learnt about
the old set of backends can outlive it, and no second piece of module state has to be kept in step.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from mixprec._backend import Availability, Device, Request
from mixprec._errors import PluginError

if TYPE_CHECKING:
    from mixprec._registry import Registered

__all__ = ["Caches"]


class Caches:
    """What resolution learnt for one snapshot: policies, their answers, presence, finished plans."""

    __slots__ = ("best_device", "counts", "discovered", "plans", "policies", "probes", "reported", "strict", "torch")

    def __init__(self, strict: bool = False) -> None:
        #: MIXPREC_STRICT as it was at discovery: a backend whose policy fails is then an error.
        self.strict = strict
        self.policies: dict[str, ModuleType | PluginError] = {}
        #: (backend, precision, device) -> the answer in force: the policy's, unless the device is absent.
        self.probes: dict[tuple[str, str, Device], Availability] = {}
        #: backend -> its policy's device_count(), or what is wrong with it.
        self.counts: dict[str, int | str] = {}
        #: device type -> torch's count of its devices, or why torch cannot count them.
        self.torch: dict[str, int | str] = {}
        self.plans: dict[tuple[Any, ...], tuple[Registered, Request]] = {}
        self.best_device: Device | None = None
        #: backend for every device type -> the device types its policy's device_types() found here, or None.
        self.discovered: dict[str, tuple[str, ...] | None] = {}
        #: backends whose failed policy has been warned about.
        self.reported: set[str] = set()

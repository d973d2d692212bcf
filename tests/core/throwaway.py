"""Throwaway backends for the core's tests: real plugin and policy modules in real distributions.

Every plugin written here records its import and each call of its hook in the module ``ledger``
(installed beside it), so a test can count what discovery really did. Policies answer fixed
statuses and count one device unless told otherwise, which is how the tests drive selection,
presence and "auto" without the hardware; a policy records each call of its ``device_count()``
in its list ``COUNTED``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

from tests.distributions import Site

#: A device type no real backend serves, registered by throwaway backends.
FAKE_DEVICE = "fakeacc"


def ledger_events(site: Site) -> list[tuple[str, str]]:
    """The ledger's events, ("import" | "hook", module name), installing the ledger if needed."""
    if not (site.root / "ledger.py").exists():
        site.install("ledger", modules={"ledger": "events: list[tuple[str, str]] = []\n"})
    events: list[tuple[str, str]] = importlib.import_module("ledger").events
    return events


def backend(
    name: str,
    device_type: str = FAKE_DEVICE,
    precisions: Sequence[str] = ("bf16-mixed", "16-mixed"),
    *,
    policy: str,
    priority: int = 0,
    contracts: Mapping[str, str] | None = None,
) -> str:
    """Source of a ``mixprec.Backend(...)`` expression; ``contracts`` maps precisions to ``Contract(...)`` source."""
    declared = ", ".join(f"{p!r}: {source}" for p, source in (contracts or {}).items())
    return (
        f"mixprec.Backend(name={name!r}, device_type={device_type!r}, precisions={tuple(precisions)!r},"
        f" policy={policy!r}, priority={priority!r}, contracts={{{declared}}})"
    )


def plugin(*backends: str, body: str = "", hook: str | None = None) -> str:
    """Source of a plugin module whose hook returns ``backends`` (or runs ``hook``, a statement block).

    ``body`` runs at import time, after the import has been recorded.
    """
    returned = hook or f"return [{', '.join(backends)}]"
    return "\n".join(
        [
            "import ledger",
            "import mixprec",
            "ledger.events.append(('import', __name__))",
            body,
            "@mixprec.hookimpl",
            "def mixprec_backends():",
            "    ledger.events.append(('hook', __name__))",
            *(f"    {line}" for line in returned.splitlines()),
            "",
        ]
    )


def policy(answers: Mapping[str, tuple[str, str]] | None = None, *, device_count: int = 1) -> str:
    """Source of a policy module with fixed answers; a precision not in ``answers`` is available."""
    return f"""
import mixprec

ANSWERS = {dict(answers or {})!r}


def availability(precision, device):
    status, reason = ANSWERS.get(precision, ("available", ""))
    return mixprec.Availability(status, reason)


#: One entry per call of device_count(), for tests that count them.
COUNTED = []


def device_count():
    COUNTED.append(True)
    return {device_count!r}


def create(request):
    from mixprec.precision import mixed_precision, true_precision

    if request.precision.endswith("-mixed"):
        return mixed_precision(request, scaler=request.precision == "16-mixed")
    return true_precision(request)
"""


def install_backend(
    site: Site,
    name: str,
    device_type: str = FAKE_DEVICE,
    precisions: Sequence[str] = ("bf16-mixed", "16-mixed"),
    *,
    priority: int = 0,
    answers: Mapping[str, tuple[str, str]] | None = None,
    device_count: int = 1,
    distribution: str | None = None,
    contracts: Mapping[str, str] | None = None,
) -> str:
    """Install a distribution (``tw-NAME`` unless given) with plugin ``NAME`` serving one backend ``NAME``.

    Returns the plugin's package, ``tw_NAME``; its policy is ``tw_NAME.policy``.
    """
    package = "tw_" + name.replace("-", "_")
    ledger_events(site)
    site.install(
        distribution or f"tw-{name}",
        entry_points={name: package},
        modules={
            package: plugin(
                backend(
                    name, device_type, precisions, policy=f"{package}.policy", priority=priority, contracts=contracts
                )
            ),
            f"{package}.policy": policy(answers, device_count=device_count),
        },
    )
    return package

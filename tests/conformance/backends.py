"""Throwaway backends for the conformance suite's own tests, installed as real distributions.

:func:`install` writes a plugin module and a policy module into a throwaway distribution whose
``mixprec.backends`` entry point registers one backend on the CPU; the registry finds it exactly as
it finds an installed wheel. :func:`broken_policy` is the source of a policy whose objects are
mixprec's own :class:`~mixprec.precision.AutocastPrecision` with one method replaced: one defect each.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from tests.distributions import Site

#: A policy that builds the reference objects, exactly as mixprec-cpu does, and finds every precision usable.
REFERENCE_POLICY = """
from mixprec import Availability
from mixprec.precision import mixed_precision


def availability(precision, device):
    return Availability.available()


def device_count():
    return 1


def create(request):
    return mixed_precision(request, scaler=request.precision == "16-mixed")
"""


def broken_policy(methods: str, create: str | None = None) -> str:
    """A policy whose objects are AutocastPrecision with ``methods`` (class-body source) overriding its own.

    ``create`` replaces the body of ``create(request)`` for defects in how objects are built.
    """
    default_create = """
        scaler = make_scaler(request) if request.precision == "16-mixed" else None
        return Broken(request.precision, request.device.type, scaler=scaler)
    """
    return "\n".join(
        [
            "import contextlib",
            "import torch",
            "from lightning.fabric.plugins.precision import MixedPrecision",
            "from lightning_utilities.core.apply_func import apply_to_collection",
            "from mixprec import Availability",
            "from mixprec.precision import AutocastPrecision, make_scaler",
            "",
            "SHARED = {}",
            "",
            "def availability(precision, device):",
            "    return Availability.available()",
            "",
            "def device_count():",
            "    return 1",
            "",
            "class Broken(AutocastPrecision):",
            textwrap.indent(textwrap.dedent(methods).strip(), "    "),
            "",
            "def create(request):",
            textwrap.indent(textwrap.dedent(create or default_create).strip(), "    "),
            "",
        ]
    )


def install(
    site: Site,
    name: str,
    policy: str,
    *,
    precisions: Sequence[str] = ("bf16-mixed",),
    device_type: str = "cpu",
    unsupported: Mapping[str, str] | None = None,
) -> str:
    """Install a distribution whose entry point registers backend ``name`` with ``policy``; return its name."""
    package = "cf_" + name.replace("-", "_")
    plugin = f"""
        from mixprec import Backend, hookimpl


        @hookimpl
        def mixprec_backends():
            return [
                Backend(
                    name={name!r},
                    device_type={device_type!r},
                    precisions={tuple(precisions)!r},
                    policy="{package}.policy",
                    unsupported={dict(unsupported or {})!r},
                )
            ]
    """
    site.install(
        f"{package.replace('_', '-')}",
        entry_points={name: package},
        modules={package: plugin, f"{package}.policy": policy},
    )
    return name

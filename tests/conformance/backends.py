"""Throwaway backends for the conformance suite's own tests, installed as real distributions.

:func:`install` writes a plugin module and a policy module into a throwaway distribution whose
``mixprec.backends`` entry point registers one backend; the registry finds it exactly as it finds an
installed wheel.

:data:`CONTROL_POLICY` builds Lightning's own, unmodified precision classes, each with mixprec's
state refusal (``ScalerGuard``) as its only addition (and Fabric's ``MixedPrecision`` with mixprec's
step of a closure through a GradScaler, which torch's ``GradScaler.step`` refuses), and the GradScaler
``make_scaler`` builds from the user's options (torch's, with the options checked against what its
tensors keep): Fabric's classes for ``target="fabric"``, the Trainer's for ``target="trainer"``, which
also resume a checkpoint of another precision and step a fused optimizer as mixprec's Trainer classes
do (their ``_TrainerGuard``). It is the control that must pass every check. :func:`broken_policy` is
the same policy with one defect: the methods
given replace the control's own, in Fabric's classes or in the Trainer's.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from tests.distributions import Site

#: A policy that builds mixprec's standard objects, as the smallest backend does, and finds every precision usable.
REFERENCE_POLICY = """
from mixprec import Availability
from mixprec.precision import standard_precision


def availability(precision, device):
    return Availability.available()


def device_count():
    return 1


def create(request):
    return standard_precision(request)
"""

_CONTROL = """
import contextlib
import copyreg
import math

import torch
from lightning.fabric.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from lightning.pytorch.plugins import precision as trainer
from lightning_utilities.core.apply_func import apply_to_collection

from mixprec import Availability
from mixprec._fabric import _scaled_step
from mixprec._trainer import _TrainerGuard as TrainerGuard
from mixprec.precision import ScalerGuard, make_scaler

SHARED = {{}}


def availability(precision, device):
    return Availability.available()


def device_count():
    return 1


def scaler(request):
    return make_scaler(request)


class ClosureStep(ScalerGuard, MixedPrecision):
    # With a GradScaler, a closure runs first and the step goes through the scaler, as mixprec's class does.
    def optimizer_step(self, optimizer, **kwargs):
        return _scaled_step(self, optimizer, super().optimizer_step, kwargs)


class Mixed(ClosureStep):
{methods}


class Half(ScalerGuard, HalfPrecision):
{methods}


class Double(ScalerGuard, DoublePrecision):
{methods}


class Full(ScalerGuard, Precision):
{methods}


class TrainerMixed(TrainerGuard, trainer.MixedPrecision):
    # The Trainer files a plugin's state under its class's __qualname__: Lightning's, as mixprec's classes keep it.
    __qualname__ = "MixedPrecision"

{trainer_methods}


def _trainer_mixed(state):
    obj = TrainerMixed.__new__(TrainerMixed)
    obj.__dict__.update(state)
    return obj


# pickle finds a class by its __qualname__, which here names Fabric's class in this module: say how to rebuild it.
copyreg.pickle(TrainerMixed, lambda obj: (_trainer_mixed, (obj.__dict__,)))


class TrainerHalf(TrainerGuard, trainer.HalfPrecision):
{trainer_methods}


class TrainerDouble(TrainerGuard, trainer.DoublePrecision):
{trainer_methods}


class TrainerFull(TrainerGuard, trainer.Precision):
{trainer_methods}


def build(request):
    precision = request.precision
    fabric = request.target == "fabric"
    if precision == "16-mixed":
        return (Mixed if fabric else TrainerMixed)(precision, request.device.type, scaler=scaler(request))
    if precision == "bf16-mixed":
        return (Mixed if fabric else TrainerMixed)(precision, request.device.type)
    if precision in ("16-true", "bf16-true"):
        return (Half if fabric else TrainerHalf)(precision)
    if precision == "64-true":
        return Double() if fabric else TrainerDouble()
    return Full() if fabric else TrainerFull()


def create(request):
    if request.target == "trainer":
{trainer_create}
{create}
"""


def broken_policy(
    methods: str = "pass",
    create: str = "return build(request)",
    trainer_methods: str = "pass",
    trainer_create: str = "return build(request)",
) -> str:
    """The control policy whose Fabric classes have ``methods`` (class-body source) in place of their own, and
    whose Trainer classes have ``trainer_methods``.

    ``create`` replaces the body of ``create(request)`` for Fabric's objects, ``trainer_create`` for the
    Trainer's, for defects in how objects are built; ``build(request)``
    is the control's object for the request's target and ``scaler(request)`` its GradScaler. The Trainer's
    autocast class, ``TrainerMixed``, keeps Lightning's ``__qualname__``, under which the Trainer files its state.
    """

    def indented(source: str) -> str:
        return textwrap.indent(textwrap.dedent(source).strip(), "    ")

    return _CONTROL.format(
        methods=indented(methods),
        create=indented(create),
        trainer_methods=indented(trainer_methods),
        trainer_create=textwrap.indent(indented(trainer_create), "    "),
    )


#: Lightning's unmodified classes with ScalerGuard: passes every check of every standard precision.
CONTROL_POLICY = broken_policy()


def install(
    site: Site,
    name: str,
    policy: str,
    *,
    precisions: Sequence[str] = ("bf16-mixed",),
    device_type: str = "cpu",
    unsupported: Mapping[str, str] | None = None,
    contracts: Mapping[str, str] | None = None,
    targets: Sequence[str] = ("fabric", "trainer"),
    strategy_families: Sequence[str] = (),
    expected_failed_checks: Mapping[str, str] | None = None,
    priority: int = 0,
) -> str:
    """Install a distribution whose entry point registers backend ``name`` with ``policy``; return its name.

    ``contracts`` maps a precision to the source of its ``Contract(...)``. ``strategy_families`` is none by default:
    the control's classes and their broken copies are the ordinary strategies' (the suite skips their FSDP cases).
    """
    package = "cf_" + name.replace("-", "_")
    declared = "{" + ", ".join(f"{p!r}: {source}" for p, source in (contracts or {}).items()) + "}"
    plugin = f"""
        from mixprec import Backend, Contract, OptionTrial, hookimpl


        @hookimpl
        def mixprec_backends():
            return [
                Backend(
                    name={name!r},
                    device_type={device_type!r},
                    precisions={tuple(precisions)!r},
                    policy="{package}.policy",
                    unsupported={dict(unsupported or {})!r},
                    contracts={declared},
                    targets={tuple(targets)!r},
                    strategy_families={tuple(strategy_families)!r},
                    priority={priority!r},
                    expected_failed_checks={dict(expected_failed_checks or {})!r},
                )
            ]
    """
    site.install(
        f"{package.replace('_', '-')}",
        entry_points={name: package},
        modules={package: plugin, f"{package}.policy": policy},
    )
    return name

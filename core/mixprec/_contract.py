"""What a precision promises, as data: the contracts the core fixes, and the type a backend declares its own with.

A precision's contract is what every object built for it must do, whichever backend serves it:
"bf16-mixed" autocasts to bfloat16 and keeps float32 parameters and no GradScaler on every
device. The core fixes the contracts of the standard precisions (:data:`STANDARD_CONTRACTS`); a
backend that offers any other precision declares its contract in its description
(``Backend(..., contracts={"my-precision": Contract(...)})``), and the conformance suite
(:mod:`mixprec.testing`) holds its objects to it. A non-standard precision without a declared
contract fails the suite: nothing is ever passed unverified.

Dtypes are named by strings (``"bfloat16"``, torch's attribute names) so that a plugin's
description imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mixprec._errors import PluginError
from mixprec._vocabulary import DTYPES, MIXED_PRECISIONS, STANDARD_PRECISIONS, TRUE_PRECISIONS, unknown_capabilities

__all__ = ["DTYPES", "STANDARD_CONTRACTS", "Contract", "OptionTrial"]

#: How far the final loss of the suite's small model may land from float32 training, relative to
#: the float32 loss, by the dtype the model computes in (see ``mixprec.testing`` for the measurements).
DEFAULT_TRAINING_RTOL: Mapping[str, float] = MappingProxyType(
    {
        "float64": 1e-3,
        "float32": 1e-3,
        "float16": 0.02,
        "bfloat16": 0.1,
        "float8_e4m3fn": 0.25,
        "float8_e5m2": 0.25,
    }
)


def capability_reasons(value: Any) -> Mapping[str, str] | str:
    """``value`` as a read-only map of known capability names to non-empty reasons, or what is wrong with it.

    Both a backend and a contract declare the optional capabilities they lack this way; a name that
    is not one of :data:`mixprec._vocabulary.CAPABILITIES` is refused here, as the plugin loads.
    """
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        return f"unsupported {value!r} must map capability names to non-empty reasons"
    return unknown_capabilities(value) or MappingProxyType(dict(value))


#: The types of an option value a contract names: plain data, so that a plugin's description imports no torch.
_PLAIN = (type(None), bool, int, float, str)


def _plain(value: Any) -> Any:
    """``value`` with lists made tuples, or raise ValueError when it is not plain data."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(item) for item in value)
    if isinstance(value, _PLAIN):
        return value
    raise ValueError(value)


@dataclass(frozen=True)
class OptionTrial:
    """A backend option the conformance suite must build the precision's objects with, and the effect it must have.

    A contract whose objects take options that change what they promise (which layers a
    module-converting precision converts, say) names values the suite tries, so that an option
    the backend ignores fails the suite instead of passing unnoticed.

    Args:
        options: the options as ``get_precision(precision, device, **options)`` takes them, with plain
            values (None, bool, int, float, str, or lists and tuples of them; lists are kept as tuples).
        converts: the layers of the suite's conversion model (``mixprec.testing._conversion``: an
            ``nn.Sequential`` whose linear layers "0" and "3" are eligible, "5" is not) that
            ``convert_module`` converts with these options; None when the options are not about
            conversion, and then objects built with them must compute another output than objects
            built without them, before or after one step.
    """

    options: Mapping[str, Any]
    converts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        options: Any = self.options
        if not isinstance(options, Mapping) or not options or not all(isinstance(k, str) for k in options):
            problems.append(f"options {options!r} must map option names to values, at least one")
        else:
            try:
                object.__setattr__(self, "options", MappingProxyType({k: _plain(v) for k, v in options.items()}))
            except ValueError as exc:
                problems.append(f"options {options!r} hold {exc.args[0]!r}, which is not plain data ({_PLAIN_NAMES})")
        converts: Any = self.converts
        if converts is not None:
            if isinstance(converts, str) or not isinstance(converts, (tuple, list)):
                problems.append(f"converts {converts!r} must be None or a tuple of layer names")
            elif not all(isinstance(name, str) for name in converts):
                problems.append(f"converts {converts!r} must name layers by strings ('0', '3')")
            else:
                object.__setattr__(self, "converts", tuple(converts))
        if problems:
            raise PluginError("Invalid OptionTrial: " + "; ".join(problems))


_PLAIN_NAMES = "None, bool, int, float, str, or lists and tuples of them"


@dataclass(frozen=True)
class Contract:
    """What every object built for one precision promises, whatever the backend and device.

    Args:
        compute_dtype: the dtype of an ``nn.Linear``'s output inside ``forward_context()`` (after
            ``convert_module`` and ``convert_input``).
        parameter_dtype: the dtype of a module's parameters after ``convert_module`` (the master
            weights the optimizer steps).
        autocast: ``forward_context()`` is ``torch.autocast(device_type, compute_dtype)``.
        loss_scaling: the object carries an enabled ``torch.amp.GradScaler``: ``backward`` scales the
            loss, ``optimizer_step`` unscales and skips a step with inf/NaN gradients, and the scaler's
            state is the object's ``state_dict()``.
        converts_io: ``convert_input`` casts floating tensors to ``compute_dtype`` and
            ``convert_output`` casts them back to ``torch.get_default_dtype()``; False leaves both
            untouched.
        converts_modules: the module classes, by qualified name (``"torch.nn.Linear"``), whose
            instances ``convert_module`` replaces with the precision's own layers; empty when it only
            casts parameters. A converted model keeps the plain model's ``state_dict`` keys and shapes.
        matmul_dtype: the dtype the converted modules' matrix multiplications compute in (for
            float8 training ``"float8_e4m3fn"``); None when they compute in ``compute_dtype``.
        dims_multiple: which layers of the ``converts_modules`` classes ``convert_module`` takes: a
            layer is converted when every dimension of its ``weight`` is a multiple of this (float8
            matmuls need 16: torchao's and TransformerEngine's rule), and any other stays as it is,
            computing as the rest of the model does. 1: every layer of those classes.
        training_rtol: how far, relative to the float32 loss, the suite's small model trained under
            the precision may end from the same model trained in float32; None for the default of
            the dtype it computes in (see :attr:`rtol`).
        unsupported: the optional capabilities of ``mixprec.testing.CAPABILITIES`` this precision
            lacks, each with the reason, added to those its backend declares for all its precisions.
        option_trials: option values the conformance suite builds objects with, each with the effect
            it must have (:class:`OptionTrial`); a trial that says which layers are converted needs a
            contract that converts modules.
        description: one line on what the precision is, for ``mixprec list`` and ``explain``.
    """

    compute_dtype: str
    parameter_dtype: str = "float32"
    autocast: bool = False
    loss_scaling: bool = False
    converts_io: bool = True
    converts_modules: tuple[str, ...] = ()
    matmul_dtype: str | None = None
    dims_multiple: int = 1
    training_rtol: float | None = None
    unsupported: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    option_trials: tuple[OptionTrial, ...] = ()

    def __post_init__(self) -> None:
        # Contracts come from third-party plugins: check every field at run time, whatever the annotations say.
        problems: list[str] = []
        for name in ("compute_dtype", "parameter_dtype"):
            value: Any = getattr(self, name)
            if value not in DTYPES:
                problems.append(f"{name} {value!r} must be one of {', '.join(DTYPES)}")
        if self.matmul_dtype is not None and self.matmul_dtype not in DTYPES:
            problems.append(f"matmul_dtype {self.matmul_dtype!r} must be None or one of {', '.join(DTYPES)}")
        for name in ("autocast", "loss_scaling", "converts_io"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} {getattr(self, name)!r} must be a bool")
        modules: Any = self.converts_modules
        if isinstance(modules, str) or not isinstance(modules, (tuple, list)):
            problems.append(f"converts_modules {modules!r} must be a tuple of qualified class names")
        elif not all(isinstance(m, str) and "." in m for m in modules):
            problems.append(f"converts_modules {modules!r} must name classes as 'package.module.Class'")
        else:
            object.__setattr__(self, "converts_modules", tuple(modules))
        multiple: Any = self.dims_multiple
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            problems.append(f"dims_multiple {multiple!r} must be a positive int")
        rtol: Any = self.training_rtol
        if rtol is not None and (
            isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < math.inf
        ):
            problems.append(f"training_rtol {rtol!r} must be None or a positive finite number")
        unsupported = capability_reasons(self.unsupported)
        if isinstance(unsupported, str):
            problems.append(unsupported)
        else:
            object.__setattr__(self, "unsupported", unsupported)
        description: Any = self.description
        if not isinstance(description, str):
            problems.append(f"description {description!r} must be a string")
        problems += self._trial_problems()
        if problems:
            raise PluginError("Invalid Contract: " + "; ".join(problems))

    def _trial_problems(self) -> list[str]:
        trials: Any = self.option_trials
        if isinstance(trials, OptionTrial) or not isinstance(trials, (tuple, list)):
            return [f"option_trials {trials!r} must be a tuple of mixprec.OptionTrial"]
        if not all(isinstance(trial, OptionTrial) for trial in trials):
            return [f"option_trials {trials!r} must hold mixprec.OptionTrial objects"]
        object.__setattr__(self, "option_trials", tuple(trials))
        if not self.converts_modules and any(trial.converts is not None for trial in trials):
            return ["option_trials say which layers are converted, but converts_modules is empty"]
        return []

    @property
    def rtol(self) -> float:
        """The training tolerance in force: ``training_rtol``, or the default of the dtype it computes in."""
        if self.training_rtol is not None:
            return float(self.training_rtol)
        return DEFAULT_TRAINING_RTOL[self.matmul_dtype or self.compute_dtype]


#: The contracts the core fixes, one for each standard precision: every backend that offers one of
#: these precisions is held to it.
STANDARD_CONTRACTS: Mapping[str, Contract] = MappingProxyType(
    {
        "16-mixed": Contract(
            MIXED_PRECISIONS["16-mixed"], autocast=True, loss_scaling=True, description="float16 autocast, loss scaling"
        ),
        "bf16-mixed": Contract(
            MIXED_PRECISIONS["bf16-mixed"], autocast=True, description="bfloat16 autocast, float32 weights"
        ),
        **{
            # "32-true" is the default dtype: its inputs and outputs are left as they are.
            precision: Contract(
                dtype,
                parameter_dtype=dtype,
                converts_io=dtype != "float32",
                description=f"everything in {dtype}",
            )
            for precision, dtype in TRUE_PRECISIONS.items()
        },
        "fp8-mixed": Contract(
            "bfloat16",
            autocast=True,
            converts_modules=("torch.nn.Linear",),
            matmul_dtype="float8_e4m3fn",
            dims_multiple=16,
            # A filter by layer-name patterns: of the conversion model's eligible layers "0" and "3", only "0".
            option_trials=(OptionTrial({"module_filter": ["0"]}, converts=("0",)),),
            description="float8 matmuls with dynamic scaling in the converted layers, the rest as bf16-mixed",
        ),
    }
)
assert tuple(STANDARD_CONTRACTS) == STANDARD_PRECISIONS

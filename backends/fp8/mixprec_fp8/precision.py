"""The "fp8-mixed" object: "bf16-mixed" whose linear layers compute their matmuls in float8, through torchao.

``convert_module`` replaces every ``torch.nn.Linear`` whose weight's dimensions are both multiples
of 16 (what float8 matmuls take) with torchao's ``Float8Linear``
(``torchao.float8.convert_to_float8_training``): its weight stays the same float32 parameter (the
master weight the optimizer steps), and each forward and backward casts the matmul operands to
float8 with dynamic scaling, computed from the tensors of that step. Everything else runs as in
"bf16-mixed": ``torch.autocast`` to bfloat16, no loss scaling. Fabric's ``setup`` and the Trainer
call ``convert_module``; calling it again, or on a model converted by hand, changes nothing.

Which layers stay in bfloat16, and why (dimensions, the user's ``module_filter``, a subclass of
``nn.Linear`` whose own ``forward`` would be lost), is recorded in ``conversion`` after each
call and logged at INFO on the ``mixprec_fp8`` logger. A converted model's ``state_dict`` has the
plain model's keys, shapes and dtypes: a checkpoint moves between fp8 and any other precision.

Options (``get_precision("fp8-mixed", device, **options)``):

- ``recipe``: torchao's float8 recipe, by its name (:data:`RECIPES`): "tensorwise" (the default:
  one scale per tensor, the fastest), "rowwise" (a scale per row, more accurate) or
  "rowwise_with_gw_hp" (rowwise, with the weight gradient in high precision, the most accurate).
- ``module_filter``: which ``nn.Linear`` layers to convert, among those whose dimensions float8
  takes: a callable ``(module, fully_qualified_name) -> bool`` (torchao's ``module_filter_fn``),
  or a list of ``fnmatch`` patterns of fully qualified names (``["blocks.*"]``).

On the CPU, torchao's emulation computes the float8 matmuls (operands rounded to float8, products
in float32): torch's CPU ``_scaled_mm`` is a reference kernel (a step of a 256x1024 layer on 256
tokens measured 8.4 s with it, 16 ms emulated).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightning.fabric.plugins.precision import Precision
from torch import nn

from mixprec import OptionError, PrecisionError, Request
from mixprec.precision import AutocastPrecision, strategy_family
from mixprec_fp8._torchao import Float8Linear, Float8LinearConfig, Float8LinearRecipeName, convert_to_float8_training

__all__ = [
    "MULTIPLE",
    "OPTIONS",
    "RECIPES",
    "Conversion",
    "Float8Layers",
    "Float8Precision",
    "LayerNames",
    "ModuleFilter",
    "build",
]

log = logging.getLogger("mixprec_fp8")

#: torchao's float8 recipes, by the names torchao gives them.
RECIPES: tuple[str, ...] = tuple(recipe.value for recipe in Float8LinearRecipeName)
#: The options ``get_precision("fp8-mixed", ...)`` takes.
OPTIONS = ("recipe", "module_filter")
#: Every dimension of a converted layer's weight is a multiple of this (float8 matmuls need it).
MULTIPLE = 16

#: Which layers to convert: ``(module, fully_qualified_name) -> bool``, as torchao's ``module_filter_fn``.
ModuleFilter = Callable[[nn.Module, str], bool]


@dataclass(frozen=True)
class LayerNames:
    """A ``module_filter`` from ``fnmatch`` patterns: a layer is converted when its name matches one.

    A class rather than a closure, so that a precision object that holds one pickles (``ddp_spawn``).
    """

    patterns: tuple[str, ...]

    def __call__(self, module: nn.Module, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)


@dataclass(frozen=True)
class Conversion:
    """What ``convert_module`` did to a model: its float8 layers, and why its other linear layers are not.

    Attributes:
        recipe: torchao's recipe of the layers this conversion made.
        converted: the fully qualified names of the model's float8 layers ("" is the root module).
        skipped: each ``nn.Linear`` left as it is (it computes in bfloat16), with the reason.
    """

    recipe: str
    converted: tuple[str, ...]
    skipped: Mapping[str, str]

    def __str__(self) -> str:
        total = len(self.converted) + len(self.skipped)
        line = f"fp8-mixed ({self.recipe}): {len(self.converted)} of {total} linear layers compute in float8"
        if self.skipped:
            shown = [f"{name or '<root>'} ({why})" for name, why in list(self.skipped.items())[:3]]
            more = len(self.skipped) - len(shown)
            line += "; in bfloat16: " + ", ".join(shown) + (f" and {more} more" if more else "")
        return line


class Float8Layers:
    """The conversion of a model's linear layers to torchao's float8 ones, for one recipe and filter.

    Args:
        device: the device type the model trains on: torchao emulates the float8 matmuls off CUDA.
        recipe: one of :data:`RECIPES`.
        module_filter: which eligible layers to convert (see the module's docstring); None: all.

    Raises:
        OptionError: an unknown recipe, or a filter that is neither a callable nor a list of patterns.
    """

    def __init__(self, device: str, recipe: str = "tensorwise", module_filter: Any = None) -> None:
        self.recipe = _recipe(recipe)
        self.module_filter = _module_filter(module_filter)
        config = Float8LinearConfig.from_recipe_name(self.recipe)
        self.config = config if device == "cuda" else dataclasses.replace(config, emulate=True)
        #: What the last call of :meth:`convert` did; None before the first.
        self.conversion: Conversion | None = None

    def convert(self, module: nn.Module) -> nn.Module:
        """Replace the eligible ``nn.Linear`` layers of ``module`` with float8 ones; return the module.

        The module is changed in place (a root ``nn.Linear`` is replaced: use the module returned).
        Parameters are kept, not copied, so an optimizer made before still steps them. Layers that are
        already float8 are left as they are, so converting twice changes nothing.
        """
        skipped: dict[str, str] = {}

        def take(layer: nn.Module, name: str) -> bool:
            if isinstance(layer, Float8Linear):
                return False
            reason = _ineligible(layer)
            if reason is None and self.module_filter is not None and not self.module_filter(layer, name):
                reason = "module_filter excludes it"
            if reason is not None:
                skipped[name] = reason
            return reason is None

        converted: nn.Module = convert_to_float8_training(module, module_filter_fn=take, config=self.config)
        names = tuple(name for name, layer in converted.named_modules() if isinstance(layer, Float8Linear))
        self.conversion = Conversion(self.recipe, names, skipped)
        log.info("%s", self.conversion)
        return converted


def _ineligible(layer: nn.Module) -> str | None:
    """Why ``layer`` (an ``nn.Linear`` or a subclass) cannot be converted; None when it can."""
    if type(layer) is not nn.Linear:
        return f"{type(layer).__qualname__} is a subclass of nn.Linear, whose own computation would be lost"
    out_features, in_features = layer.weight.shape
    for name, size in (("in_features", in_features), ("out_features", out_features)):
        if size % MULTIPLE:
            return f"{name} {size} is not a multiple of {MULTIPLE}"
    return None


def _recipe(recipe: Any) -> str:
    if isinstance(recipe, str) and recipe in RECIPES:
        return recipe
    close = difflib.get_close_matches(str(recipe), RECIPES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise OptionError(f"Unknown fp8-mixed recipe {recipe!r}.{hint} torchao's recipes are {', '.join(RECIPES)}.")


def _module_filter(value: Any) -> ModuleFilter | None:
    if value is None or callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, (list, tuple)) and value and all(isinstance(pattern, str) and pattern for pattern in value):
        return LayerNames(tuple(value))
    raise OptionError(
        f"module_filter={value!r} is neither a callable (module, name) -> bool nor a non-empty list of layer-name"
        " patterns: pass e.g. module_filter=['blocks.*'] or module_filter=lambda module, name: name != 'head'."
    )


class Float8Conversion:
    """What "fp8-mixed" adds to a bfloat16 autocast precision, Fabric's or the Trainer's: torchao's float8
    linear layers, put in by ``convert_module``. It comes first among a class's bases."""

    device: str
    # Lightning types it as its own precision strings, which "fp8-mixed" is not.
    precision: Any

    def __init__(self, device: str, recipe: str = "tensorwise", module_filter: Any = None) -> None:
        super().__init__("bf16-mixed", device)  # type: ignore[call-arg]
        self.precision = "fp8-mixed"
        self.layers = Float8Layers(device, recipe, module_filter)

    @property
    def recipe(self) -> str:
        return self.layers.recipe

    @property
    def conversion(self) -> Conversion | None:
        """What the last ``convert_module`` did: the float8 layers, and the others with the reason."""
        return self.layers.conversion

    def convert_module(self, module: nn.Module) -> nn.Module:
        return self.layers.convert(super().convert_module(module))  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, recipe={self.recipe!r})"


class Float8Precision(Float8Conversion, AutocastPrecision):
    """Lightning Fabric's "fp8-mixed" precision: torchao's float8 linear layers, the rest as "bf16-mixed".

    ``Fabric(plugins=[Float8Precision("cuda")])`` converts the model in ``setup``. Built by
    ``get_precision("fp8-mixed", device)``; the arguments are those of :class:`Float8Layers`.
    """


def build(request: Request) -> Precision:
    """The "fp8-mixed" object for ``request``: Fabric's :class:`Float8Precision`, or the Trainer's.

    Raises:
        OptionError: an option that is not one of :data:`OPTIONS`, or a value it cannot take.
        PrecisionError: an FSDP strategy (see the message), or one mixprec serves no precision for.
    """
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise OptionError(
            f"Unknown option(s) {unknown} for 'fp8-mixed' from backend {request.backend!r}: it takes only"
            f" {list(OPTIONS)} (recipe: one of {', '.join(RECIPES)})."
        )
    if strategy_family(request) == "fsdp":
        raise PrecisionError(
            f"mixprec-fp8 builds no 'fp8-mixed' object for strategy {request.strategy!r}: Lightning's FSDP strategy"
            " shards with FSDP1 (flat parameters), while torchao builds and tests its float8 layers for FSDP2"
            " (torch.distributed.fsdp.fully_shard), whose float8 all-gather works only there, and mixprec-fp8 cannot"
            " verify them under FSDP1. Train with strategy='ddp', or with FSDP in 'bf16-mixed'."
        )
    device = request.device.type
    if request.target == "trainer":
        from mixprec_fp8._trainer import Float8Precision as TrainerFloat8Precision

        return TrainerFloat8Precision(device, **request.options)
    return Float8Precision(device, **request.options)

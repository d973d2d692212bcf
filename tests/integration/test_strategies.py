"""Objects for Lightning's strategies: FSDP's precision class on the requested device, the rest refused.

Lightning runs FSDP only on GPUs, so the FSDP objects are tested here as objects, including that
Lightning's FSDP strategies take them; pickling is what "ddp_spawn" and every spawn launcher do.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from lightning.fabric.plugins.precision import FSDPPrecision as FabricFSDPPrecision
from lightning.fabric.strategies.fsdp import FSDPStrategy as FabricFSDPStrategy
from lightning.pytorch.plugins.precision import FSDPPrecision as TrainerFSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy as TrainerFSDPStrategy
from torch.distributed.fsdp import MixedPrecision as TorchFSDPMixedPrecision
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

import mixprec

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")


def precision_for(precision: str, target: str, strategy: str | None, **options: Any) -> Any:
    """mixprec's object for a CPU run; typed Any because the attributes tested depend on the target."""
    # mixprec-sr, where installed, serves bf16-true for Fabric without FSDP only: these tests are of the core's.
    backend = "core" if precision.endswith("-true") else None
    return mixprec.get_precision(precision, "cpu", target=target, strategy=strategy, backend=backend, **options)


FSDP_PRECISIONS = {"fabric": FabricFSDPPrecision, "trainer": TrainerFSDPPrecision}
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
@pytest.mark.parametrize("precision", list(AUTOCAST_DTYPES))
@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_cpu_offload"])
def test_fsdp_gets_lightnings_fsdp_precision_class(target: str, precision: str, strategy: str) -> None:
    plugin = precision_for(precision, target, strategy)

    assert isinstance(plugin, FSDP_PRECISIONS[target])


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
@pytest.mark.parametrize("precision", list(AUTOCAST_DTYPES))
def test_fsdp_precision_autocasts_on_the_requested_device(target: str, precision: str) -> None:
    plugin = precision_for(precision, target, "fsdp")

    with plugin.forward_context():
        product = torch.ones(4, 4) @ torch.ones(4, 4)

    assert product.dtype == AUTOCAST_DTYPES[precision]


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
def test_fsdp_16_mixed_has_a_sharded_grad_scaler_for_the_device_with_the_options(target: str) -> None:
    plugin = precision_for("16-mixed", target, "fsdp", init_scale=512.0)

    assert isinstance(plugin.scaler, ShardedGradScaler)
    assert plugin.scaler._device == "cpu"
    assert plugin.state_dict()["scale"] == 512.0


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
def test_fsdp_bf16_mixed_has_no_scaler(target: str) -> None:
    assert precision_for("bf16-mixed", target, "fsdp").scaler is None


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
@pytest.mark.parametrize("precision", list(AUTOCAST_DTYPES))
def test_fsdp_mixed_precision_config_uses_the_low_dtype(target: str, precision: str) -> None:
    config = precision_for(precision, target, "fsdp").mixed_precision_config

    dtype = AUTOCAST_DTYPES[precision]
    assert config == TorchFSDPMixedPrecision(param_dtype=dtype, reduce_dtype=dtype, buffer_dtype=dtype)


def test_fabrics_fsdp_strategy_takes_the_fsdp_precision() -> None:
    plugin = mixprec.get_precision("bf16-mixed", "cpu", strategy="fsdp")

    assert FabricFSDPStrategy(precision=plugin).precision is plugin


def test_the_trainers_fsdp_strategy_takes_the_fsdp_precision() -> None:
    plugin = precision_for("bf16-mixed", "trainer", "fsdp")

    assert TrainerFSDPStrategy(precision_plugin=plugin).precision_plugin is plugin


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
@pytest.mark.parametrize("precision", ["32-true", "bf16-true", "16-true"])
def test_fsdp_true_precisions_are_lightnings_fsdp_precision(target: str, precision: str) -> None:
    plugin = precision_for(precision, target, "fsdp")

    assert isinstance(plugin, FSDP_PRECISIONS[target])
    assert plugin.precision == precision


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
def test_fsdp_in_64_true_is_a_precision_error(target: str) -> None:
    with pytest.raises(mixprec.PrecisionError, match="'32-true'"):
        precision_for("64-true", target, "fsdp")


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
@pytest.mark.parametrize("strategy", ["deepspeed", "deepspeed_stage_2", "xla", "single_xla"])
def test_a_strategy_with_its_own_precision_class_is_refused_naming_the_served_ones(target: str, strategy: str) -> None:
    with pytest.raises(mixprec.PrecisionError, match=f"no precision for strategy '{strategy}'.*ddp_spawn.*fsdp"):
        precision_for("bf16-mixed", target, strategy)


def test_an_unknown_strategy_is_a_precision_error_with_the_closest_name() -> None:
    with pytest.raises(mixprec.PrecisionError, match="Did you mean 'fsdp'"):
        mixprec.get_precision("bf16-mixed", "cpu", strategy="fdsp")


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "auto"])
def test_ddp_strategies_get_the_ordinary_mixed_precision(target: str, strategy: str) -> None:
    plugin = precision_for("16-mixed", target, strategy)

    assert not isinstance(plugin, FSDP_PRECISIONS[target])
    assert type(plugin.scaler) is torch.amp.GradScaler


@pytest.mark.parametrize("target", list(FSDP_PRECISIONS))
@pytest.mark.parametrize("strategy", [None, "fsdp"])
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "32-true", "bf16-true"])
def test_every_object_pickles_with_its_state_and_device(target: str, strategy: str | None, precision: str) -> None:
    plugin = precision_for(precision, target, strategy)
    if precision == "16-mixed":
        plugin.load_state_dict({**plugin.state_dict(), "scale": 8.0, "_growth_tracker": 5})

    copy = pickle.loads(pickle.dumps(plugin))

    assert type(copy) is type(plugin)
    assert copy.state_dict() == plugin.state_dict()
    assert getattr(copy, "device", None) == getattr(plugin, "device", None)
    assert copy.mixprec_backend == plugin.mixprec_backend

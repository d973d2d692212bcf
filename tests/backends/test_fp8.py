"""mixprec-fp8: where "fp8-mixed" runs, its options, its object in Fabric, the Trainer, DDP, checkpoints, compile.

The seam of the policy: ``mixprec_fp8.policy.decide(precision, device, Float8Probe)`` is a pure
function of a probe; tests for GPUs and installs this machine lacks hand it probes made here.
Everything else runs for real on the CPU, where torchao emulates the float8 matmuls (float8
operands, float32 products): the models are narrow (widths of 16 to 64) and train a few steps.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from lightning.fabric import Fabric
from lightning.fabric.plugins.environments.lightning import find_free_network_port
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import mixprec
from mixprec import Device, OptionError, PrecisionError
from mixprec.probes import GPU, CUDAProbe

# Where mixprec-fp8 is not installed (the env of another backend), this whole file is skipped, saying so.
pytest.importorskip("mixprec_fp8", reason="mixprec-fp8 is not installed")

from mixprec_fp8 import policy
from mixprec_fp8._torchao import Float8Linear, Float8LinearConfig
from mixprec_fp8.policy import Float8Probe, decide
from mixprec_fp8.precision import RECIPES, Conversion, Float8Precision
from tests.backends.simulated_cuda import Simulation, cards_of, simulate

#: Checkpoints moving between fp8-mixed and bf16-mixed need a backend that serves bf16-mixed on the CPU: the
#: whole suite has mixprec-cpu, the env of mixprec-fp8 alone does not.
needs_bf16_mixed = pytest.mark.skipif(
    importlib.util.find_spec("mixprec_cpu") is None,
    reason="mixprec-cpu, which serves bf16-mixed here, is not installed",
)

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

CPU, CUDA = Device("cpu"), Device("cuda")
TORCHAO = "0.18.0"


def gpus(*capabilities: tuple[int, int]) -> Float8Probe:
    """torchao 0.18 and a CUDA 12.8 build of torch seeing one GPU per capability."""
    devices = tuple(GPU(f"GPU sm_{major}{minor}", (major, minor)) for major, minor in capabilities)
    return Float8Probe(TORCHAO, CUDAProbe("2.13.0", "12.8", devices=devices))


def fp8(device: str = "cpu", **options: Any) -> Any:
    return mixprec.get_precision("fp8-mixed", device, **options)


def mlp(width: int = 32) -> nn.Sequential:
    """Two eligible layers (width x 2*width x width) and an ineligible head (width -> 1)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width), nn.Linear(width, 1))


def batch(width: int = 32, rows: int = 32) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(rows, width, generator=generator)
    return x, torch.tanh(x.sum(dim=1, keepdim=True) / width**0.5)


def float8_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, Float8Linear)]


# --- decide: every branch ---------------------------------------------------------------------------


@pytest.mark.parametrize("capability", [(8, 9), (9, 0), (10, 0), (12, 0)])
def test_fp8_mixed_is_available_on_gpus_of_compute_capability_8_9_and_newer(capability: tuple[int, int]) -> None:
    found = decide("fp8-mixed", CUDA, gpus(capability))
    assert (found.status, found.reason) == (
        "available",
        f"CUDA device 0 (GPU sm_{capability[0]}{capability[1]}) is sm_{capability[0]}{capability[1]} and has"
        " float8 tensor cores",
    )


@pytest.mark.parametrize(
    ("capability", "instead"),
    [((8, 0), "'bf16-mixed'"), ((8, 6), "'bf16-mixed'"), ((7, 5), "'16-mixed'"), ((6, 1), "'32-true'")],
)
def test_below_compute_capability_8_9_fp8_mixed_is_unavailable_naming_the_precision_to_use(
    capability: tuple[int, int], instead: str
) -> None:
    found = decide("fp8-mixed", CUDA, gpus(capability))
    assert found.status == "unavailable"
    assert f"is sm_{capability[0]}{capability[1]}, and float8 matmuls need compute capability 8.9" in found.reason
    assert found.reason.endswith(f"use {instead}")


def test_the_requested_gpu_decides_not_the_first_one() -> None:
    found = gpus((8, 0), (9, 0))
    assert (
        decide("fp8-mixed", Device("cuda", 0), found).status,
        decide("fp8-mixed", Device("cuda", 1), found).status,
    ) == (
        "unavailable",
        "available",
    )


def test_without_a_cuda_build_of_torch_fp8_mixed_is_unavailable_for_mixprec_cudas_reason() -> None:
    found = decide("fp8-mixed", CUDA, Float8Probe(TORCHAO, CUDAProbe("2.13.0+cpu", None)))
    assert (found.status, found.reason) == (
        "unavailable",
        "torch 2.13.0+cpu was built without CUDA: install a CUDA build of torch (https://pytorch.org/get-started/locally/)",
    )


def test_a_gpu_index_past_the_last_is_unavailable() -> None:
    found = decide("fp8-mixed", Device("cuda", 2), gpus((9, 0)))
    assert (found.status, found.reason) == ("unavailable", "cuda:2 does not exist: 1 CUDA device (cuda:0)")


def test_a_rocm_gpu_is_unavailable_as_its_float8_types_are_not_the_contracts() -> None:
    rocm = CUDAProbe("2.13.0", None, hip_version="6.2", devices=(GPU("AMD Instinct MI300X", None),))
    found = decide("fp8-mixed", CUDA, Float8Probe(TORCHAO, rocm))
    assert found.status == "unavailable"
    assert "float8_e4m3fnuz" in found.reason
    assert found.reason.endswith("use 'bf16-mixed'")


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_without_torchao_fp8_mixed_is_unavailable_naming_the_package_to_install(device: Device) -> None:
    found = decide("fp8-mixed", device, dataclasses.replace(gpus((9, 0)), torchao=None))
    assert (found.status, found.reason) == (
        "unavailable",
        "torchao is not installed; fp8-mixed trains through its float8 layers: pip install 'torchao>=0.18'",
    )


@pytest.mark.parametrize("version", ["0.17.0", "0.9.1"])
def test_a_torchao_older_than_0_18_is_unavailable_naming_the_version_to_install(version: str) -> None:
    found = decide("fp8-mixed", CUDA, dataclasses.replace(gpus((9, 0)), torchao=version))
    assert (found.status, found.reason) == (
        "unavailable",
        f"torchao {version} is too old for mixprec-fp8, which needs 0.18 or newer: pip install 'torchao>=0.18'",
    )


@pytest.mark.parametrize("version", ["0.18.0", "0.18.0+cu128", "0.19.0.dev20260101+cpu", "1.0.0"])
def test_torchao_0_18_and_newer_builds_serve(version: str) -> None:
    assert decide("fp8-mixed", CUDA, dataclasses.replace(gpus((9, 0)), torchao=version)).status == "available"


def test_a_torchao_version_that_cannot_be_read_is_unavailable() -> None:
    found = decide("fp8-mixed", CPU, Float8Probe("unknown"))
    assert (found.status, found.reason) == (
        "unavailable",
        "the installed torchao's version 'unknown' cannot be read; reinstall it: pip install 'torchao>=0.18'",
    )


def test_on_the_cpu_fp8_mixed_is_slow_because_torchao_emulates_the_float8_matmuls() -> None:
    found = decide("fp8-mixed", CPU, Float8Probe(TORCHAO))
    assert found.status == "slow"
    assert "torchao emulates them" in found.reason
    assert "several times slower than 'bf16-mixed'" in found.reason


def test_a_cpu_index_other_than_0_does_not_exist() -> None:
    found = decide("fp8-mixed", Device("cpu", 1), Float8Probe(TORCHAO))
    assert (found.status, found.reason) == ("unavailable", "there is one CPU device; cpu:1 does not exist, use 'cpu'")


def test_a_precision_the_backend_does_not_offer_is_unavailable() -> None:
    assert decide("bf16-mixed", CPU, Float8Probe(TORCHAO)).status == "unavailable"


# --- the installed distribution, the probe and the registry on this machine --------------------------


def test_the_distribution_registers_one_entry_point_describing_a_backend_per_device_type() -> None:
    from importlib import metadata

    (entry_point,) = [
        ep for ep in metadata.distribution("mixprec-fp8").entry_points if ep.group == mixprec.ENTRY_POINT_GROUP
    ]
    backends = entry_point.load().mixprec_backends()
    assert (entry_point.name, entry_point.value) == ("fp8", "mixprec_fp8")
    assert [(b.name, b.device_type, b.precisions, b.policy) for b in backends] == [
        ("fp8-cuda", "cuda", ("fp8-mixed",), "mixprec_fp8.cuda"),
        ("fp8", "cpu", ("fp8-mixed",), "mixprec_fp8.cpu"),
    ]


def test_the_distribution_depends_on_the_core_with_its_gpu_probe_torch_and_torchao_0_18() -> None:
    from importlib import metadata

    assert set(metadata.requires("mixprec-fp8") or ()) == {"mixprec[cuda]>=0.1.0", "torch>=2.4", "torchao>=0.18"}


def test_the_distribution_ships_its_type_information() -> None:
    import mixprec_fp8

    assert mixprec_fp8.__file__ is not None
    assert (Path(mixprec_fp8.__file__).parent / "py.typed").is_file()


def test_the_probe_reads_torchaos_version_from_its_installed_metadata() -> None:
    from importlib import metadata

    assert policy.probe("cpu") == Float8Probe(metadata.version("torchao"))


def test_mixprec_lists_fp8_mixed_on_the_cpu_as_slow_and_on_cuda_by_the_cores_probe() -> None:
    records = {(r.backend, r.device_type): r for r in mixprec.available() if r.precision == "fp8-mixed"}
    assert records[("fp8", "cpu")].status == "slow"
    assert records[("fp8-cuda", "cuda")].distribution == "mixprec-fp8"


@pytest.mark.slow
def test_loading_the_plugin_imports_no_torch_and_listing_imports_neither_torchao_nor_lightning() -> None:
    heavy = "('torch', 'torchao', 'lightning')"
    code = (
        "import sys, mixprec_fp8, mixprec_fp8.cpu, mixprec_fp8.cuda, mixprec\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
        "mixprec.available(); mixprec.explain('fp8-mixed', 'cpu')\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert ran.stdout.split("\n")[:2] == ["[]", "['torch']"]


@pytest.mark.parametrize(("capability", "status"), [((9, 0), "available"), ((8, 0), "unavailable")])
def test_on_a_simulated_gpu_machine_fp8_cuda_decides_by_the_gpu_without_starting_cuda(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], status: str
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim: Simulation = simulate(monkeypatch, cards_of(capability))
    (record,) = [r for r in mixprec.available("cuda") if r.backend == "fp8-cuda"]
    assert (record.status, sim.tripped) == (status, [])


def test_on_a_simulated_h100_the_fp8_object_is_built_without_starting_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim = simulate(monkeypatch, cards_of((9, 0)))
    p = fp8("cuda")
    assert (p.device, p.layers.config.emulate, sim.tripped) == ("cuda", False, [])


def test_auto_never_picks_fp8_mixed() -> None:
    assert mixprec.get_precision("auto", "cpu").precision != "fp8-mixed"


# --- options -----------------------------------------------------------------------------------------


def test_the_default_recipe_is_tensorwise_and_every_torchao_recipe_is_accepted() -> None:
    assert fp8().recipe == "tensorwise"
    assert [fp8(recipe=recipe).recipe for recipe in RECIPES] == ["tensorwise", "rowwise", "rowwise_with_gw_hp"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipe_is_torchaos_configuration_emulated_off_cuda(recipe: str) -> None:
    expected = dataclasses.replace(Float8LinearConfig.from_recipe_name(recipe), emulate=True)
    assert fp8(recipe=recipe).layers.config == expected


@given(st.text(max_size=20).filter(lambda text: text not in RECIPES))
def test_an_unknown_recipe_is_an_option_error_listing_torchaos(recipe: str) -> None:
    with pytest.raises(OptionError, match="torchao's recipes are tensorwise, rowwise, rowwise_with_gw_hp"):
        fp8(recipe=recipe)


def test_a_misspelt_recipe_is_told_the_closest_one() -> None:
    with pytest.raises(OptionError, match="Did you mean 'rowwise'"):
        fp8(recipe="row_wise")


def test_an_unknown_option_is_an_option_error_listing_the_valid_ones() -> None:
    with pytest.raises(
        OptionError, match=r"Unknown option\(s\) \['init_scale'\] .* takes only \['recipe', 'module_filter'\]"
    ):
        fp8(init_scale=1024.0)


@pytest.mark.parametrize("value", ["0", [], [""], 16, ["blocks.*", 3]])
def test_a_module_filter_that_is_neither_a_callable_nor_patterns_is_an_option_error(value: Any) -> None:
    with pytest.raises(OptionError, match="is neither a callable"):
        fp8(module_filter=value)


def test_a_module_filter_of_patterns_converts_only_the_layers_whose_names_match() -> None:
    p = fp8(module_filter=["2"])
    model = p.convert_module(mlp())
    assert (float8_layers(model), p.conversion.skipped["0"]) == (["2"], "module_filter excludes it")


def test_a_callable_module_filter_is_asked_with_each_eligible_layer_and_its_name() -> None:
    asked: list[tuple[str, str]] = []

    def only_first(module: nn.Module, name: str) -> bool:
        asked.append((type(module).__name__, name))
        return name == "0"

    model = fp8(module_filter=only_first).convert_module(mlp())
    assert (asked, float8_layers(model)) == ([("Linear", "0"), ("Linear", "2")], ["0"])


def test_fsdp_is_refused_saying_why_and_what_to_use() -> None:
    # mixprec-fp8 declares strategy_families=() (its float8 layers are built for FSDP2, Lightning's FSDP is FSDP1).
    with pytest.raises(PrecisionError, match=r"'fp8' builds none for the 'fsdp' strategies") as refused:
        fp8(strategy="fsdp")
    assert "strategy='ddp'" in str(refused.value)


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_strategies_get_the_fp8_object(strategy: str) -> None:
    assert isinstance(fp8(strategy=strategy), Float8Precision)


# --- convert_module -----------------------------------------------------------------------------------


def test_convert_module_replaces_the_eligible_linear_layers_in_place() -> None:
    model = mlp()
    weight = model[0].weight
    converted = fp8().convert_module(model)
    assert (converted is model, float8_layers(model), model[0].weight is weight) == (True, ["0", "2"], True)


def test_a_layer_whose_dimensions_are_not_multiples_of_16_stays_a_plain_linear() -> None:
    p = fp8()
    model = p.convert_module(mlp())
    assert (type(model[3]), p.conversion.skipped) == (nn.Linear, {"3": "out_features 1 is not a multiple of 16"})


def test_a_subclass_of_linear_is_not_converted_so_its_own_forward_is_kept() -> None:
    class Scaled(nn.Linear):
        def forward(self, x: Tensor) -> Tensor:
            return 2 * super().forward(x)

    p = fp8()
    model = p.convert_module(nn.Sequential(Scaled(32, 32)))
    assert type(model[0]) is Scaled
    assert "subclass of nn.Linear" in p.conversion.skipped["0"]


def test_a_root_linear_is_returned_converted() -> None:
    assert isinstance(fp8().convert_module(nn.Linear(32, 64)), Float8Linear)


def test_the_conversion_is_recorded_and_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    p = fp8()
    with caplog.at_level(logging.INFO, logger="mixprec_fp8"):
        p.convert_module(mlp())
    assert p.conversion == Conversion("tensorwise", ("0", "2"), {"3": "out_features 1 is not a multiple of 16"})
    assert [r.getMessage() for r in caplog.records] == [
        "fp8-mixed (tensorwise): 2 of 3 linear layers compute in float8;"
        " in bfloat16: 3 (out_features 1 is not a multiple of 16)"
    ]


def test_converting_nothing_logs_nothing_above_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        fp8().convert_module(nn.Sequential(nn.Linear(8, 1)))
    assert [r for r in caplog.records if r.levelno > logging.INFO] == []


def test_converting_twice_changes_nothing() -> None:
    p = fp8()
    model = p.convert_module(mlp())
    layers = list(model.modules())
    assert fp8(recipe="rowwise").convert_module(p.convert_module(model)) is model
    assert (list(model.modules()), p.conversion.converted) == (layers, ("0", "2"))


def test_forward_computes_in_bfloat16_outside_the_float8_matmuls() -> None:
    p = fp8()
    model = p.convert_module(mlp())
    x, _ = batch()
    with p.forward_context():
        assert model[0](p.convert_input(x)).dtype == torch.bfloat16


def test_a_converted_state_dict_has_the_plain_models_keys_shapes_and_dtypes() -> None:
    plain = mlp().state_dict()
    converted = fp8().convert_module(mlp()).state_dict()
    assert [(k, v.shape, v.dtype) for k, v in converted.items()] == [(k, v.shape, v.dtype) for k, v in plain.items()]


def test_the_fp8_object_pickles_with_its_recipe_and_filter() -> None:
    import pickle

    p = pickle.loads(pickle.dumps(fp8(recipe="rowwise", module_filter=["0"])))
    model = p.convert_module(mlp())
    assert (p.recipe, float8_layers(model)) == ("rowwise", ["0"])


def test_its_repr_names_the_precision_device_and_recipe() -> None:
    assert repr(fp8(recipe="rowwise")) == (
        "mixprec_fp8.precision.Float8Precision(precision='fp8-mixed', device='cpu', recipe='rowwise')"
    )


# --- Fabric ---------------------------------------------------------------------------------------


def fabric_run(precision: Any, steps: int = 3) -> tuple[Fabric, Any, Any, list[float]]:
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[precision])
    module = mlp()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    x, y = batch()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        fabric.backward(loss)
        optimizer.step()
        losses.append(float(loss.detach()))
    return fabric, model, optimizer, losses


def test_fabric_setup_converts_the_model_and_trains_it() -> None:
    _, model, _, losses = fabric_run(fp8())
    assert float8_layers(model.module) == ["0", "2"]
    assert losses[-1] < losses[0]


@needs_bf16_mixed
def test_a_fabric_checkpoint_saved_in_fp8_loads_into_a_bf16_mixed_run_and_back(tmp_path: Path) -> None:
    fabric, model, optimizer, _ = fabric_run(fp8())
    fabric.save(tmp_path / "fp8.ckpt", {"model": model, "optimizer": optimizer})
    plain, plain_model, plain_optimizer, _ = fabric_run(mixprec.get_precision("bf16-mixed", "cpu"), steps=1)
    plain.load(tmp_path / "fp8.ckpt", {"model": plain_model, "optimizer": plain_optimizer})
    torch.testing.assert_close(plain_model.state_dict(), model.state_dict(), rtol=0, atol=0)
    plain.save(tmp_path / "bf16.ckpt", {"model": plain_model})
    again, again_model, _, _ = fabric_run(fp8(), steps=1)
    again.load(tmp_path / "bf16.ckpt", {"model": again_model})
    torch.testing.assert_close(again_model.state_dict(), model.state_dict(), rtol=0, atol=0)
    assert float8_layers(again_model.module) == ["0", "2"]


# --- the Trainer ----------------------------------------------------------------------------------


class Module:
    """A LightningModule around ``mlp()``, built on first use (importing lightning.pytorch costs seconds)."""

    @staticmethod
    @functools.cache
    def cls() -> type:
        from lightning.pytorch import LightningModule

        class MLP(LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = mlp()

            def forward(self, x: Tensor) -> Tensor:
                out: Tensor = self.net(x)
                return out

            def training_step(self, batch: tuple[Tensor, Tensor], index: int) -> Tensor:
                x, y = batch
                return F.mse_loss(self(x).float(), y)

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.SGD(self.parameters(), lr=0.1)

            def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
                return DataLoader(TensorDataset(*batch()), batch_size=16)

        return MLP


def fit(precision: Any, root: Path, steps: int = 2, ckpt_path: Path | None = None) -> tuple[Any, Any]:
    from lightning.pytorch import Trainer

    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        plugins=[precision],
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    module = Module.cls()()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data loader's workers and Lightning's own deprecations
        trainer.fit(module, ckpt_path=ckpt_path)
    return trainer, module


@pytest.mark.slow
def test_the_trainer_converts_the_lightning_module_and_trains_it(tmp_path: Path) -> None:
    p = fp8(target="trainer")
    trainer, module = fit(p, tmp_path)
    assert (trainer.precision, float8_layers(module.net), trainer.global_step) == ("fp8-mixed", ["0", "2"], 2)


@pytest.mark.slow
@needs_bf16_mixed
def test_a_trainer_checkpoint_saved_in_fp8_loads_into_a_plain_module_and_resumes_in_bf16_mixed(tmp_path: Path) -> None:
    trainer, module = fit(fp8(target="trainer"), tmp_path)
    trainer.save_checkpoint(tmp_path / "fp8.ckpt")
    checkpoint = torch.load(tmp_path / "fp8.ckpt", weights_only=True)
    plain = Module.cls()()
    plain.load_state_dict(checkpoint["state_dict"])
    torch.testing.assert_close(plain.state_dict(), module.state_dict(), rtol=0, atol=0)
    resumed, _ = fit(mixprec.get_precision("bf16-mixed", "cpu", target="trainer"), tmp_path, 3, tmp_path / "fp8.ckpt")
    assert resumed.global_step == 3


@pytest.mark.slow
@needs_bf16_mixed
def test_a_bf16_mixed_trainer_checkpoint_resumes_in_fp8(tmp_path: Path) -> None:
    trainer, _ = fit(mixprec.get_precision("bf16-mixed", "cpu", target="trainer"), tmp_path)
    trainer.save_checkpoint(tmp_path / "bf16.ckpt")
    resumed, module = fit(fp8(target="trainer"), tmp_path, 3, tmp_path / "bf16.ckpt")
    assert (resumed.global_step, float8_layers(module.net)) == (3, ["0", "2"])


# --- DDP on the CPU (gloo, two processes) -----------------------------------------------------------


def ddp_train(fabric: Fabric, outdir: str) -> None:
    """Train on this rank's own data from this rank's own initial weights; write what the rank ends with."""
    torch.manual_seed(fabric.global_rank)  # DDP must broadcast rank 0's weights
    module = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 1))
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    x, y = torch.randn(16, 32), torch.randn(16, 1)
    for _ in range(3):
        optimizer.zero_grad()
        fabric.backward(F.mse_loss(model(x), y))
        optimizer.step()
    result = {
        "weights": [p.detach().clone() for p in module.parameters()],
        "float8": float8_layers(module),
        "conversion": str(fabric.strategy.precision.conversion),
    }
    torch.save(result, Path(outdir) / f"rank{fabric.global_rank}.pt")
    fabric.barrier()
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    outdir = tmp_path_factory.mktemp("fp8-ddp")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MASTER_PORT", str(find_free_network_port()))
        fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn", plugins=[fp8(strategy="ddp_spawn")])
        fabric.launch(functools.partial(ddp_train, outdir=str(outdir)))
    return [torch.load(outdir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_ddp_converts_the_model_on_every_rank(ddp_ranks: list[dict[str, Any]]) -> None:
    assert [rank["float8"] for rank in ddp_ranks] == [["0"], ["0"]]


@pytest.mark.slow
def test_ddp_ranks_hold_identical_weights_after_fp8_training(ddp_ranks: list[dict[str, Any]]) -> None:
    rank0, rank1 = ddp_ranks
    assert all(torch.equal(a, b) for a, b in zip(rank0["weights"], rank1["weights"], strict=True))


# --- torch.compile ----------------------------------------------------------------------------------


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
def test_a_training_step_through_the_plugin_compiles_as_one_graph() -> None:
    p = fp8()
    model = p.convert_module(mlp())
    x, y = batch()

    def loss(x: Tensor, y: Tensor) -> Tensor:
        with p.forward_context():
            out = model(p.convert_input(x))
        return F.mse_loss(p.convert_output(out), y)

    explanation = torch._dynamo.explain(loss)(x, y)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0)
    compiled: Callable[[Tensor, Tensor], Tensor] = torch.compile(loss, fullgraph=True, backend="eager")
    compiled(x, y).backward()
    assert model[0].weight.grad is not None


@pytest.mark.usefixtures("fresh_dynamo")
def test_a_converted_model_compiled_with_aot_autograd_matches_eager() -> None:
    p = fp8()
    model = p.convert_module(mlp())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x, _ = batch()
    with p.forward_context():
        torch.testing.assert_close(compiled(x), model(x))

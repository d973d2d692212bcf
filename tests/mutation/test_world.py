"""A mutant is built from the installed source, runs its change where the installed code would, and nothing else."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.plugins.precision import MixedPrecision as TrainerMixedPrecision

import mixprec
import mixprec.testing
from mixprec import Device, Request
from mixprec._fabric import AutocastPrecision
from tests.mutation.operators import sites
from tests.mutation.runner import Worker, _register, evaluate
from tests.mutation.world import TARGETS, WORLD, Mutant, World, source


def _request(precision: str, target: str = "fabric") -> Request:
    return Request(precision, Device("cpu"), "mutation-test", target=target)  # type: ignore[arg-type]


def _build(world: World, precision: str, target: str = "fabric") -> Precision:
    return world.module("mixprec.precision").standard_precision(_request(precision, target))  # type: ignore[no-any-return]


def _mutant(module: str, operator: str, where: str) -> Mutant:
    """The mutant of ``module`` by ``operator`` in the function ``where``, or whose changed statement starts so."""
    tree = ast.parse(source(module))
    for index in range(len(sites(tree, operator))):
        mutant = Mutant(module, operator, index)
        change = mutant.tree()[1]
        if where in (change.function, change.before[: len(where)]):
            return mutant
    raise LookupError(f"no {operator} mutant of {module} at {where!r}")


@pytest.fixture(scope="module")
def unscaled_backward() -> World:
    """Fabric's MixedPrecision.backward without its GradScaler: the loss is never scaled."""
    return World.of(_mutant("lightning.fabric.plugins.precision.amp", "drop_statement", "tensor = self.scaler.scale"))


def test_every_target_module_is_in_the_world() -> None:
    assert set(TARGETS) <= set(WORLD)
    assert WORLD[-1] == "mixprec.precision"


def test_the_installed_source_is_read_at_run_time() -> None:
    import lightning.fabric.plugins.precision.amp as amp

    assert source("lightning.fabric.plugins.precision.amp") == Path(amp.__file__).read_text()


def test_a_mutant_object_is_an_instance_of_the_installed_classes(unscaled_backward: World) -> None:
    p = _build(unscaled_backward, "16-mixed")
    assert isinstance(p, AutocastPrecision)
    assert isinstance(p, MixedPrecision)
    assert type(p) is not AutocastPrecision
    assert type(p).__qualname__ == "AutocastPrecision"


def test_a_mutant_runs_its_change(unscaled_backward: World) -> None:
    p = _build(unscaled_backward, "16-mixed")
    weight = torch.ones(2, requires_grad=True)
    p.backward((weight * 3).sum(), None)
    assert weight.grad is not None
    assert torch.equal(weight.grad, torch.full((2,), 3.0))  # unscaled: the installed class would scale by 1024


@pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")
def test_the_installed_classes_are_left_as_they_are(unscaled_backward: World) -> None:
    _build(unscaled_backward, "16-mixed")
    p = mixprec.get_precision("16-mixed", "cpu", init_scale=4.0)
    weight = torch.ones(2, requires_grad=True)
    p.backward((weight * 3).sum(), None)
    assert weight.grad is not None
    assert torch.equal(weight.grad, torch.full((2,), 12.0))


def test_a_mutant_keeps_mixprecs_mixins_where_the_builder_puts_them(unscaled_backward: World) -> None:
    p = _build(unscaled_backward, "16-mixed")
    with pytest.raises(mixprec.StateDictError):
        p.load_state_dict({})


def test_a_mutant_of_a_base_class_reaches_every_class_built_on_it() -> None:
    world = World.of(_mutant("lightning.fabric.plugins.precision.precision", "return_early", "Precision.main_params"))
    groups = [{"params": [torch.zeros(1, requires_grad=True)]}]
    for precision in ("32-true", "bf16-true", "16-mixed"):
        assert list(_build(world, precision).main_params(torch.optim.SGD(groups, lr=1.0))) == []


def test_a_trainer_object_keeps_the_class_name_its_checkpoint_is_filed_under(unscaled_backward: World) -> None:
    world = World.of(_mutant("lightning.pytorch.plugins.precision.amp", "drop_statement", "self.scaler.update()"))
    p = _build(world, "16-mixed", target="trainer")
    assert isinstance(p, TrainerMixedPrecision)
    assert type(p).__qualname__ == "MixedPrecision"


def test_a_mutant_object_pickles(unscaled_backward: World) -> None:
    p: Any = _build(unscaled_backward, "16-mixed")
    copy = pickle.loads(pickle.dumps(p))
    assert type(copy) is type(p)
    assert copy.scaler.get_scale() == p.scaler.get_scale()


def test_an_unchanged_world_passes_the_whole_suite() -> None:
    """The control: re-executing the installed modules, unchanged, changes nothing the suite sees."""
    module = "lightning.fabric.plugins.precision.precision"
    world = World(ast.parse(source(module)), module)
    _register("mutation-control", lambda request: world.module("mixprec.precision").standard_precision(request))
    report = mixprec.testing.run("mutation-control", "cpu")
    assert report.ok, str(report)


def test_a_mutant_that_breaks_its_module_is_killed_by_the_suite_reporting_failure() -> None:
    world = World(ast.parse("raise ImportError('broken')"), "mixprec._fabric")
    _register("mutation-broken", lambda request: world.module("mixprec.precision").standard_precision(request))
    report = mixprec.testing.run("mutation-broken", "cpu", "bf16-mixed")
    assert not report.ok
    assert len(report.failures) == len(report.results) - 1  # all but contract_declared, which builds no object
    assert all("broken" in failure.detail for failure in report.failures)


def test_evaluate_names_the_case_that_killed_a_mutant() -> None:
    mutant = _mutant("lightning.fabric.plugins.precision.amp", "drop_statement", "tensor = self.scaler.scale")
    outcome = evaluate(mutant)
    assert outcome["outcome"] == "killed"
    assert outcome["killed_by"].startswith("16-mixed:")


@pytest.mark.slow
def test_a_mutant_past_the_timeout_is_a_timeout_and_the_next_runs_in_a_new_worker() -> None:
    hang = _mutant("mixprec._fabric", "negate_condition", "if cls is dict")
    with Worker(timeout=0.01) as worker:
        first = worker.evaluate(hang)
        worker.timeout = 300
        second = worker.evaluate(_mutant("mixprec._fabric", "return_early", "mixed_precision"))
    assert first["outcome"] == "timeout"
    assert second["outcome"] == "killed"

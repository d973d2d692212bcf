"""The checks of what a Fabric loop asks of the object over several calls, each proven by broken backends.

Each broken backend is the control (Lightning's classes with ``ScalerGuard``, which passes every
check) with one defect a backend author could ship in the object for Fabric: a closure run twice or
after the step, an "unscale once" flag never reset, gradients sanitised before unscaling, a custom
GradScaler that checks one parameter group, gradients zeroed after the step, a swallowed optimizer
error, a crash on a parameter without a gradient, a cached ``main_params`` or ``state_dict``, a
``pre_backward`` that clears gradients, a graph always retained, a caller's state popped, a default
GradScaler setting of its own, autocast that depends on the grad mode, a reseeded RNG, autocast baked
into ``forward``, embeddings in the wrong dtype, dataclass outputs left alone. Each is installed as a
real distribution through a real entry point and checked with the library call ``mixprec check``
makes, for Fabric's object.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixprec.testing import CHECKS, Report, run
from tests.conformance.backends import broken_policy, install
from tests.distributions import Site, site_on_path

pytestmark = pytest.mark.filterwarnings("ignore::mixprec.PrecisionWarning")

MODULE = "_checks_fabric_loop"


@dataclass(frozen=True)
class Defect:
    """One broken backend: the control's Fabric classes with ``methods``, or built by ``create``, for ``precision``."""

    name: str
    precision: str
    fails: frozenset[str]
    methods: str = "pass"
    create: str = "return build(request)"


def _defect(name: str, precision: str, fails: str, methods: str = "pass", create: str = "") -> Defect:
    return Defect(name, precision, frozenset(fails.split()), methods, create or "return build(request)")


_CLOSURE = "scaled_step_runs_closure closure_that_raises_leaves_the_scaler_ready"

DEFECTS = [
    # --- closures through the GradScaler
    _defect(
        "closure-run-twice",
        "16-mixed",
        f"{_CLOSURE} lbfgs_rejected_with_scaler",
        """
        def optimizer_step(self, optimizer, **kwargs):
            closure = kwargs.pop("closure", None)
            if closure is None:
                return super().optimizer_step(optimizer, **kwargs)
            with torch.enable_grad():
                closure()  # "make sure the gradients are there"
                result = closure()
            super().optimizer_step(optimizer, **kwargs)
            return result
        """,
    ),
    _defect(
        "closure-after-step",
        "16-mixed",
        _CLOSURE,
        """
        def optimizer_step(self, optimizer, **kwargs):
            closure = kwargs.pop("closure", None)
            output = super().optimizer_step(optimizer, **kwargs)
            if closure is None:
                return output
            with torch.enable_grad():
                return closure()
        """,
    ),
    _defect(
        "closure-error-keeps-unscaling",
        "16-mixed",
        "closure_that_raises_leaves_the_scaler_ready lbfgs_rejected_with_scaler",
        """
        def optimizer_step(self, optimizer, **kwargs):
            closure = kwargs.pop("closure", None)
            if closure is None:
                return super().optimizer_step(optimizer, **kwargs)
            with torch.enable_grad():
                result = closure()  # an exception leaves the optimizer unscaled for good
            super().optimizer_step(optimizer, **kwargs)
            return result
        """,
    ),
    # --- clipping and skipping over steps and groups
    _defect(
        "unscale-flag-never-reset",
        "16-mixed",
        "unscale_before_clipping_every_step unscaling_refused_where_torch_cannot",
        """
        def unscale_gradients(self, optimizer):
            done = self.__dict__.setdefault("_unscaled", set())
            if id(optimizer) not in done:  # "never unscale twice"
                done.add(id(optimizer))
                super().unscale_gradients(optimizer)
        """,
    ),
    _defect(
        "gradients-sanitised-before-unscaling",
        "16-mixed",
        "overflow_while_clipping_skipped",
        """
        def unscale_gradients(self, optimizer):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:  # "keep clipping finite"
                        torch.nan_to_num_(param.grad, nan=0.0, posinf=1e30, neginf=-1e30)
            super().unscale_gradients(optimizer)
        """,
    ),
    _defect(
        "scaler-checks-the-first-group",
        "16-mixed",
        "nonfinite_in_any_group_skipped",
        create="""
        from torch.amp.grad_scaler import OptState

        global FirstGroupScaler  # a module-level class, so that the object pickles

        class FirstGroupScaler(torch.amp.GradScaler):
            def step(self, optimizer, *args, **kwargs):
                if "closure" in kwargs:  # as torch's GradScaler
                    raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
                state = self._per_optimizer_states[id(optimizer)]
                if state["stage"] is OptState.READY:
                    self.unscale_(optimizer)
                params = optimizer.param_groups[0]["params"]
                bad = any(p.grad is not None and not bool(p.grad.isfinite().all()) for p in params)
                result = None if bad else optimizer.step(*args, **kwargs)
                state["stage"] = OptState.STEPPED
                return result

        FirstGroupScaler.__qualname__ = "FirstGroupScaler"
        made = scaler(request)
        made.__class__ = FirstGroupScaler
        return Mixed(request.precision, request.device.type, scaler=made)
        """,
    ),
    _defect(
        "crash-on-a-parameter-without-gradient",
        "16-mixed",
        "overflow_while_clipping_skipped parameters_without_gradients_clipped",
        """
        def unscale_gradients(self, optimizer):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.requires_grad:
                        torch.nan_to_num_(param.grad, nan=0.0)
            super().unscale_gradients(optimizer)
        """,
    ),
    _defect(
        "main-params-cached",
        "16-mixed",
        "main_params_follow_added_groups",
        """
        def main_params(self, optimizer):
            cache = self.__dict__.setdefault("_main", {})
            if id(optimizer) not in cache:
                cache[id(optimizer)] = [p for group in optimizer.param_groups for p in group["params"]]
            return iter(cache[id(optimizer)])
        """,
    ),
    # --- the step, backward and its hooks
    _defect(
        "gradients-freed-after-step",
        "bf16-mixed",
        "gradients_kept_after_step",
        """
        def optimizer_step(self, optimizer, **kwargs):
            output = super().optimizer_step(optimizer, **kwargs)
            optimizer.zero_grad(set_to_none=True)  # "free memory early"
            return output
        """,
    ),
    _defect(
        "optimizer-error-swallowed",
        "16-mixed",
        "optimizer_errors_propagate",
        """
        def optimizer_step(self, optimizer, **kwargs):
            try:
                return super().optimizer_step(optimizer, **kwargs)
            except RuntimeError as exc:
                import warnings

                warnings.warn(f"step skipped: {exc}")
        """,
    ),
    _defect(
        "pre-backward-clears-gradients",
        "bf16-mixed",
        "backward_hooks_keep_gradients",
        """
        def pre_backward(self, tensor, module):
            if module is not None:
                module.zero_grad(set_to_none=True)
        """,
    ),
    _defect(
        "graph-always-retained",
        "bf16-mixed",
        "backward_frees_the_graph",
        """
        def backward(self, tensor, model, *args, **kwargs):
            if not args:
                kwargs.setdefault("retain_graph", True)
            super().backward(tensor, model, *args, **kwargs)
        """,
    ),
    # --- state
    _defect(
        "state-dict-cached",
        "16-mixed",
        "state_dict_follows_the_scaler",
        """
        def state_dict(self):
            if "_saved" not in self.__dict__:
                self.__dict__["_saved"] = super().state_dict()
            return dict(self.__dict__["_saved"])
        """,
    ),
    _defect(
        "load-pops-the-callers-entry",
        "bf16-mixed",
        "load_state_dict_leaves_caller_state",
        """
        def load_state_dict(self, state_dict):
            if isinstance(state_dict, dict) and "mixprec" in state_dict:
                entry = state_dict.pop("mixprec")
                state_dict = {**state_dict, "mixprec": entry}
            super().load_state_dict(state_dict)
        """,
    ),
    _defect(
        "growth-interval-of-its-own",
        "16-mixed",
        "scaler_defaults",
        create="""
        made = scaler(request)
        if "growth_interval" not in request.options:
            made.set_growth_interval(100)  # "adapts faster than torch's 2000"
        return Mixed(request.precision, request.device.type, scaler=made)
        """,
    ),
    # --- forward, conversion and I/O
    _defect(
        "autocast-only-with-grad",
        "bf16-mixed",
        "forward_context_without_grad",
        """
        def forward_context(self):
            return torch.autocast(self.device, dtype=self._desired_input_dtype, enabled=torch.is_grad_enabled())
        """,
    ),
    _defect(
        "inference-mode-when-evaluating",
        "bf16-mixed",
        "forward_context_without_grad",
        """
        def forward_context(self):
            stack = contextlib.ExitStack()
            if not torch.is_grad_enabled():
                stack.enter_context(torch.inference_mode())
            stack.enter_context(torch.autocast(self.device, dtype=self._desired_input_dtype))
            return stack
        """,
    ),
    _defect(
        "rng-reseeded",
        "bf16-mixed",
        "forward_context_keeps_rng_state",
        """
        def forward_context(self):
            torch.manual_seed(0)  # "reproducible autocast"
            return super().forward_context()
        """,
    ),
    _defect(
        "autocast-baked-into-forward",
        "bf16-mixed",
        "converted_module_keeps_its_forward",
        """
        def convert_module(self, module):
            forward = module.forward

            def autocast_forward(*args, **kwargs):
                with torch.autocast(self.device, dtype=self._desired_input_dtype):
                    return forward(*args, **kwargs)

            if not getattr(module, "_autocasts", False):
                module.forward, module._autocasts = autocast_forward, True
            return module
        """,
    ),
    _defect(
        "embeddings-kept-float32",
        "16-true",
        "parameter_dtype_of_every_layer",
        """
        def convert_module(self, module):
            kept = [(m, m.weight.data) for m in module.modules() if isinstance(m, torch.nn.Embedding)]
            module = super().convert_module(module)
            for layer, data in kept:  # "embeddings stay float32 for accuracy"
                layer.weight.data = data
            return module
        """,
    ),
    _defect(
        "dataclass-outputs-untouched",
        "bf16-mixed",
        "convert_io_of_bare_collections",
        """
        def convert_output(self, data):
            import dataclasses

            if dataclasses.is_dataclass(data):
                return data
            return super().convert_output(data)
        """,
    ),
]


class Reports:
    """Each broken backend installed once, its suite run once for Fabric, on first use."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.runs: dict[str, Report] = {}

    def of(self, defect: Defect) -> Report:
        name = f"loop-{defect.name}"
        if name not in self.runs:
            policy = broken_policy(defect.methods, defect.create)
            install(self.site, name, policy, precisions=(defect.precision,), targets=("fabric",))
            self.runs[name] = run(name, target="fabric")
        return self.runs[name]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    with contextmanager(site_on_path)(Path(tmp_path_factory.mktemp("broken-fabric-loop"))) as site:
        yield Reports(site)


LOOP_CHECKS = [c.name for c in CHECKS if c.function.__module__.rpartition(".")[2] == MODULE]


def test_every_defect_names_checks_of_the_suite() -> None:
    # A loop's defect may fail checks of other modules too (a closure run twice fails the closure checks of
    # _checks_scaled_closure and the LBFGS refusal), each proven on its own elsewhere.
    names = {c.name for c in CHECKS}
    assert {(d.name, c) for d in DEFECTS for c in d.fails if c not in names} == set()


def test_every_check_of_the_fabric_loop_is_proven_by_a_broken_backend_that_fails_it() -> None:
    proven = {check for d in DEFECTS for check in d.fails}
    assert [c for c in LOOP_CHECKS if c not in proven] == []


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_a_broken_loop_promise_fails_exactly_the_checks_named_for_its_defect(reports: Reports, defect: Defect) -> None:
    report = reports.of(defect)
    assert {r.check for r in report.failures} == defect.fails, str(report)

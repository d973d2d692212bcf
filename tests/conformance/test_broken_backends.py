"""The suite catches what matters: deliberately broken backends each fail it, in the check named for the defect.

Every backend here is mixprec's own reference object with one defect, installed as a real
distribution through a real entry point, and checked with the same library call ``mixprec check``
makes. A defect of scaling is checked on "16-mixed" (the precision with a GradScaler), any other on
"bf16-mixed".
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mixprec.testing import run
from tests.conformance.backends import broken_policy, install
from tests.distributions import Site


@dataclass(frozen=True)
class Defect:
    name: str
    precision: str
    check: str
    methods: str = "pass"
    create: str | None = None


DEFECTS = [
    Defect(
        "no-autocast",
        "bf16-mixed",
        "forward_autocast",
        """
        def forward_context(self):
            return contextlib.nullcontext()
        """,
    ),
    Defect(
        "wrong-dtype",
        "bf16-mixed",
        "forward_dtype",
        """
        def forward_context(self):
            return torch.autocast(self.device, dtype=torch.float16)
        """,
    ),
    Defect(
        "steps-on-inf",
        "16-mixed",
        "nonfinite_step_skipped",
        """
        def optimizer_step(self, optimizer, **kwargs):
            self.scaler.unscale_(optimizer)
            result = optimizer.step(**kwargs)
            self.scaler.update()
            return result
        """,
    ),
    Defect(
        "scale-never-updated",
        "16-mixed",
        "scale_backoff",
        """
        def optimizer_step(self, optimizer, **kwargs):
            result = self.scaler.step(optimizer, **kwargs)
            self.scaler.update(self.scaler.get_scale())
            return result
        """,
    ),
    Defect(
        "scale-never-grows",
        "16-mixed",
        "scale_growth",
        """
        def optimizer_step(self, optimizer, **kwargs):
            before = self.scaler.get_scale()
            result = super().optimizer_step(optimizer, **kwargs)
            self.scaler.update(min(self.scaler.get_scale(), before))
            return result
        """,
    ),
    Defect(
        "state-dict-drops-keys",
        "16-mixed",
        "state_dict_complete",
        """
        def state_dict(self):
            state = super().state_dict()
            del state["_growth_tracker"]
            return state
        """,
    ),
    Defect(
        "load-ignores-input",
        "16-mixed",
        "load_state_dict_restores",
        """
        def load_state_dict(self, state_dict):
            pass
        """,
    ),
    Defect(
        "lenient-state-loading",
        "bf16-mixed",
        "incompatible_state_dict",
        """
        def load_state_dict(self, state_dict):
            MixedPrecision.load_state_dict(self, state_dict)  # Lightning's: ignores anything without a scaler
        """,
    ),
    Defect(
        "converts-integers",
        "bf16-mixed",
        "convert_input",
        """
        def convert_input(self, data):
            return apply_to_collection(data, torch.Tensor, lambda tensor: tensor.to(torch.bfloat16))
        """,
    ),
    Defect(
        "output-stays-low",
        "bf16-mixed",
        "convert_output",
        """
        def convert_output(self, data):
            return data
        """,
    ),
    Defect(
        "autocast-leaks-after-error",
        "bf16-mixed",
        "autocast_restored_after_error",
        """
        @contextlib.contextmanager
        def forward_context(self):
            enabled, dtype = torch.is_autocast_enabled(self.device), torch.get_autocast_dtype(self.device)
            torch.set_autocast_enabled(self.device, True)
            torch.set_autocast_dtype(self.device, torch.bfloat16)
            yield
            torch.set_autocast_enabled(self.device, enabled)
            torch.set_autocast_dtype(self.device, dtype)
        """,
    ),
    Defect(
        "exit-disables-autocast",
        "bf16-mixed",
        "nested_forward_context",
        """
        @contextlib.contextmanager
        def forward_context(self):
            torch.set_autocast_enabled(self.device, True)
            torch.set_autocast_dtype(self.device, torch.bfloat16)
            try:
                yield
            finally:
                torch.set_autocast_enabled(self.device, False)
        """,
    ),
    Defect(
        "loss-not-scaled",
        "16-mixed",
        "loss_scaled",
        """
        def backward(self, tensor, model, *args, **kwargs):
            tensor.backward(*args, **kwargs)
        """,
    ),
    Defect(
        "shared-scaler",
        "16-mixed",
        "new_object_per_call",
        create="""
        scaler = SHARED.setdefault("scaler", make_scaler(request))
        return Broken(request.precision, request.device.type, scaler=scaler)
        """,
    ),
    Defect(
        "scaler-for-another-device",
        "16-mixed",
        "matches_request",
        create="""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available. Disabling": the defect itself
            return Broken(request.precision, request.device.type, scaler=torch.amp.GradScaler("cuda"))
        """,
    ),
    Defect(
        "half-parameters",
        "bf16-mixed",
        "parameter_dtype",
        """
        def convert_module(self, module):
            return module.to(torch.bfloat16)
        """,
    ),
    Defect(
        "clips-scaled-gradients",
        "16-mixed",
        "unscale_before_clipping",
        """
        def unscale_gradients(self, optimizer):
            pass
        """,
    ),
    Defect(
        "lbfgs-through-scaler",
        "16-mixed",
        "lbfgs_rejected_with_scaler",
        """
        def optimizer_step(self, optimizer, **kwargs):
            if isinstance(optimizer, torch.optim.LBFGS):
                return optimizer.step(**kwargs)
            return super().optimizer_step(optimizer, **kwargs)
        """,
    ),
    Defect(
        "drops-closure",
        "bf16-mixed",
        "lbfgs_closure",
        """
        def optimizer_step(self, optimizer, **kwargs):
            return optimizer.step()
        """,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("defect", DEFECTS, ids=[d.name for d in DEFECTS])
def test_broken_backend_fails_in_the_check_named_for_its_defect(site: Site, defect: Defect) -> None:
    name = install(
        site, f"broken-{defect.name}", broken_policy(defect.methods, defect.create), precisions=(defect.precision,)
    )
    report = run(name)
    failed = {r.check for r in report.failures}
    assert not report.ok
    assert defect.check in failed, str(report)


def test_a_capability_declared_unsupported_is_skipped_with_the_reason(site: Site) -> None:
    reason = "this accelerator's optimizers take no closure"
    policy = broken_policy("def optimizer_step(self, optimizer, **kwargs):\n    return optimizer.step()")
    name = install(site, "no-closure", policy, unsupported={"lbfgs_closure": reason})
    report = run(name, precision="bf16-mixed")
    (result,) = [r for r in report.results if r.check == "lbfgs_closure"]
    assert (result.outcome, reason in result.detail) == ("skipped", True)
    assert report.ok

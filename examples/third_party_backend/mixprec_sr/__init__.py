"""mixprec-sr: "bf16-true" on CPUs, with weight updates rounded stochastically so that small ones add up.

This module is the plugin mixprec loads through the ``mixprec.backends`` entry point. It describes
the backend as data and imports neither torch nor lightning: those come in with the policy module,
when mixprec first asks the backend something.
"""

from __future__ import annotations

from mixprec import Backend, hookimpl

__all__ = ["mixprec_backends"]


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="sr",
            device_type="cpu",
            precisions=("bf16-true",),
            policy="mixprec_sr.policy",
            # Above the core's "bf16-true" (priority -1000): installing mixprec-sr makes it the default.
            priority=10,
            unsupported={
                "lbfgs_closure": (
                    "each step runs on float32 copies of the weights, so LBFGS, which re-evaluates the model"
                    " inside its step, is refused; optimizer_step runs any other optimizer's closure first"
                ),
            },
            description="bf16-true with stochastic rounding of the weight updates, so small updates are not lost",
            # Its objects are Fabric's: for the Trainer, the resolver passes it over (the core serves "bf16-true")
            # and the conformance suite skips the Trainer's checks, saying why.
            targets=("fabric",),
            # Its rounding steps plain parameters, never FSDP's flat shards: for strategy="fsdp" the resolver passes
            # it over, and the conformance suite skips its FSDP objects' checks, saying why.
            strategy_families=(),
        )
    ]

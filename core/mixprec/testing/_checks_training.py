"""The end-to-end checks: a small model trains under the precision as in float32, and through Lightning Fabric."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixprec._contract import Contract
from mixprec.testing._base import (
    _LR,
    _TRAINING_STEPS,
    FABRIC,
    CheckFailed,
    Subject,
    _require,
    check,
    fabric_for,
    parameter_dtype,
)


@check(targets=FABRIC)
def training_matches_fp32(subject: Subject, contract: Contract) -> None:
    """A small model trained under the precision ends with a loss close to the same model trained in float32.

    30 SGD steps take the loss of the suite's model from 0.72 to 0.033 (float32, on a CPU), and every precision
    must land within the contract's rtol of that. Measured on a CPU: bfloat16 lands within 1% ("bf16-true";
    0.03% for "bf16-mixed"), float16 within 0.1%, float32 and float64 exactly; the default tolerances
    (mixprec.Contract.rtol) leave room for other devices' kernels. A defect that stalls or corrupts training
    (an unscaled loss, stale autocast casts) lands far outside; one that only shows over a long run (small
    updates lost to rounding, slow drift) cannot be told from correct behaviour in 30 steps.
    """
    p = subject.make()
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=_LR)
    x, y = subject.data
    for _ in range(_TRAINING_STEPS):
        optimizer.zero_grad()
        with p.forward_context():
            out = model(p.convert_input(x))
        loss = F.mse_loss(p.convert_output(out), y)
        p.backward(loss, model)
        p.optimizer_step(optimizer)
    start, reference = subject.reference_losses
    got = subject.evaluate(model)
    _require(
        abs(got - reference) <= contract.rtol * reference,
        f"after {_TRAINING_STEPS} steps the loss is {got:.5g}; float32 training reaches {reference:.5g} (from"
        f" {start:.5g}), and the contract (computing in {contract.compute_dtype}) wants it within"
        f" {contract.rtol:.0%} of that. The checks above say which part is wrong; if none fails, the declared"
        " training_rtol is too tight for what the precision does",
    )


@check(targets=FABRIC)
def fabric_loop(subject: Subject, contract: Contract) -> None:
    """Fabric(plugins=[p]) trains with it: fabric.autocast(), setup, backward and step."""
    p = subject.make()
    fabric = fabric_for(subject, p)
    device = subject.device
    _require(
        fabric.strategy.precision is p,
        f"Fabric uses {fabric.strategy.precision!r}, not the object it was given: it must be a"
        " lightning.fabric.plugins.precision.Precision that Fabric takes as it is",
    )
    module = subject.model()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=_LR))
    x, y = subject.data
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        with fabric.autocast():
            enabled = torch.is_autocast_enabled(device.type)
            out = model(x)
            loss = F.mse_loss(out, y.to(out.dtype))
        _require(
            enabled == contract.autocast,
            f"autocast is {'on' if enabled else 'off'} inside fabric.autocast(), which enters forward_context();"
            f" the contract {'autocasts' if contract.autocast else 'does not autocast'}",
        )
        try:
            fabric.backward(loss)
        except RuntimeError as exc:
            raise CheckFailed(
                f"fabric.backward(loss) raised RuntimeError: {str(exc).splitlines()[0]}. Fabric's module passes its"
                " output through convert_output; the checks of convert_output and backward say what is wrong"
            ) from None
        optimizer.step()
        losses.append(float(loss.detach()))
    expected = parameter_dtype(contract)
    dtypes = {param.dtype for param in model.parameters()}
    _require(
        dtypes == {expected},
        f"after fabric.setup the parameters are {sorted(map(str, dtypes))}, the contract's parameter_dtype is"
        f" {expected}: Fabric's setup calls convert_module, which must cast to it",
    )
    _require(
        losses[-1] < losses[0],
        f"five Fabric steps took the loss from {losses[0]:g} to {losses[-1]:g}; they must lower it. If convert_module"
        " replaces parameters, the optimizer Fabric set up steps the old ones: convert them in place (module.to)",
    )

"""More checks of the Trainer's object: a fused optimizer under manual optimization, GradScaler state that is not
a mapping, and LBFGS under a GradScaler, each driven as the Trainer's strategy drives the object.

- Under manual optimization ``opt.step()`` hands ``optimizer_step`` a closure that returns None and the
  step is taken: a fused optimizer's gradients are unscaled before ``on_before_optimizer_step``, as every
  other optimizer's are (Lightning unscales those right after the closure).
- A fit resumed from a checkpoint whose GradScaler entry is not a mapping (a damaged or hand-made one)
  into a precision without a GradScaler is refused with ``mixprec.StateDictError``, as a mapping is.
- With a GradScaler, LBFGS (which evaluates its closure several times in one step) is refused before the
  closure runs: no ``training_step``, no backward, no step.
"""

from __future__ import annotations

from typing import Any

import torch

from mixprec._contract import Contract
from mixprec.testing._base import (
    TRAINER,
    CheckFailed,
    Subject,
    _close,
    _no_scaler,
    _require,
    _scaler,
    _true_gradients,
    _weights,
    _wide_parameters,
    check,
)
from mixprec.testing._trainer_harness import Harness

__all__ = [
    "trainer_lbfgs_refused_before_closure",
    "trainer_manual_fused_optimizer_unscaled",
    "trainer_resume_refuses_unreadable_scaler_state",
]


@check(applies=lambda c: _scaler(c) and _wide_parameters(c), capability="fused_optimizers", targets=TRAINER)
def trainer_manual_fused_optimizer_unscaled(subject: Subject, contract: Contract) -> None:
    """Under manual optimization, a fused optimizer's gradients are unscaled before on_before_optimizer_step, and
    the step applies the true gradients, as for an unfused optimizer."""
    harness = Harness(subject, manual=True, fused=True)
    true = _true_gradients(harness.net, subject)
    harness.backward(None)  # manual_backward: no optimizer
    harness.p.optimizer_step(harness.optimizer, model=harness.module, closure=lambda: None)
    _close(
        harness.module.gradients["on_before_optimizer_step"],
        true,
        "under manual optimization (opt.step() passes a closure that returns None) on_before_optimizer_step saw a"
        " fused optimizer's gradients still scaled: unscale them after the closure in manual optimization too (a"
        " None result skips the step only under automatic optimization)",
    )


@check(applies=_no_scaler, targets=TRAINER)
def trainer_resume_refuses_unreadable_scaler_state(subject: Subject, contract: Contract) -> None:
    """Resuming a fit from a checkpoint whose GradScaler entry is not a mapping (damaged, or written by hand) into
    this precision, which has no GradScaler, raises StateDictError naming the entry, as for a mapping."""
    from mixprec._errors import StateDictError
    from mixprec.testing._checks_trainer import _restore

    state = [512.0]
    try:
        _restore(subject, "fit", {"MixedPrecision": state})
    except StateDictError as exc:
        _require(
            "'MixedPrecision'" in str(exc),
            f"resuming GradScaler state {state!r} raised StateDictError({str(exc)!r}); name where it is"
            " ('MixedPrecision')",
        )
        return
    except Exception as exc:
        raise CheckFailed(
            f"resuming a fit from a checkpoint with GradScaler state {state!r} (not a mapping) under 'MixedPrecision'"
            f" raised {type(exc).__name__}: {(str(exc) or ' ').splitlines()[0]}; it must raise mixprec.StateDictError"
            " saying how to resume, whatever the state's type"
        ) from None
    raise CheckFailed(
        f"resuming a fit from a checkpoint with GradScaler state {state!r} under 'MixedPrecision' into"
        f" {subject.precision!r}, which has no GradScaler, dropped it in silence: raise mixprec.StateDictError"
    )


@check(applies=_scaler, targets=TRAINER)
def trainer_lbfgs_refused_before_closure(subject: Subject, contract: Contract) -> None:
    """With a GradScaler, optimizer_step refuses LBFGS before running the closure: no training_step, no backward
    and no step happen (torch's GradScaler.step cannot step a closure that runs several times)."""
    harness = Harness(subject)
    optimizer = torch.optim.LBFGS(harness.net.parameters(), max_iter=2)
    calls: list[int] = []

    def closure() -> Any:
        calls.append(1)
        optimizer.zero_grad()
        loss = harness.module.training_step(None, 0)
        harness.trainer.strategy.backward(loss, optimizer)
        return loss

    before = _weights(harness.net)
    try:
        harness.p.optimizer_step(optimizer, model=harness.module, closure=closure)
    except Exception:
        pass
    else:
        raise CheckFailed(
            "optimizer_step stepped LBFGS through a GradScaler, which cannot skip a closure's steps: refuse LBFGS,"
            " as Lightning's MixedPrecision does"
        )
    moved = sum(not torch.equal(a, b) for a, b in zip(before, _weights(harness.net), strict=True))
    _require(
        not calls and moved == 0,
        f"optimizer_step refused LBFGS only after running its closure {len(calls)} time(s) (and changed {moved}"
        " parameter tensor(s)): refuse before calling the closure, so that no training_step or backward runs",
    )

"""The checks of the precision's state: state_dict() and load_state_dict().

The state is the GradScaler's, whole, as plain values: a snapshot that round-trips through a new
object and through torch.save; a state that does not fit is refused, never dropped. Values are
compared key by key, by type and value, so that a 0-dim tensor never passes for the float torch
keeps (``tensor(1024.) == 1024.0`` is truthy).
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Mapping
from typing import Any

import torch
from lightning.fabric.plugins.precision import Precision
from torch import Tensor

from mixprec._contract import Contract
from mixprec._errors import StateDictError
from mixprec.testing._base import FABRIC, CheckFailed, Subject, _loss, _poison, _require, _scaler, check

#: What to change when the state contract is broken; Lightning's own classes ignore state that does not fit.
STATE_FIX = (
    "build the object through mixprec.precision.mixed_precision() (or standard_precision()) or subclass"
    " mixprec.precision.AutocastPrecision; for a class of your own on one of Lightning's, put"
    " mixprec.precision.ScalerGuard first among its bases"
)


def _train(p: Precision, subject: Subject, poisons: tuple[float | None, ...]) -> None:
    """One step through ``p`` per entry: with that value (inf) in a gradient, or finite (None)."""
    model = p.convert_module(subject.model())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for bad in poisons:
        optimizer.zero_grad()
        p.backward(_loss(model, subject), model)
        if bad is not None:
            _poison(model, bad)
        p.optimizer_step(optimizer)


def _used(subject: Subject, contract: Contract) -> Precision:
    """An object whose scaler state differs from a fresh one's in every key: growth settings of its own, a
    skipped step (the scale) and a finite step (the growth tracker)."""
    if not contract.loss_scaling:
        return subject.make()
    p = subject.make(growth_interval=3, growth_factor=4.0, backoff_factor=0.25)
    _train(p, subject, (math.inf, None))
    return p


def _scaler_state(p: Precision) -> dict[str, Any]:
    scaler = getattr(p, "scaler", None)
    return {} if scaler is None else dict(scaler.state_dict())


def _shown(value: Any) -> str:
    return f"{value!r} (a {type(value).__name__})"


def _difference(actual: Any, expected: Mapping[str, Any], *, exact_keys: bool = False) -> str:
    """How ``actual`` differs from ``expected``, key by key, by type and value; empty when it does not."""
    if not isinstance(actual, Mapping):
        return f"is {_shown(actual)}, not a dict"
    missing = [key for key in expected if key not in actual]
    if missing:
        return f"lacks {missing}"
    if exact_keys and set(actual) != set(expected):
        return f"has the keys {sorted(actual)}, not {sorted(expected)}"
    for key, want in expected.items():
        got = actual[key]
        if type(got) is not type(want):
            return f"holds {key!r}: {_shown(got)}, where torch's GradScaler keeps {_shown(want)}"
        same = torch.equal(got, want) if isinstance(want, Tensor) else got == want
        if not same:
            return f"holds {key!r}: {got!r}, not {want!r}"
    return ""


@check(targets=FABRIC)
def state_dict_complete(subject: Subject, contract: Contract) -> None:
    """state_dict() holds the GradScaler's whole state with torch's types and values, and is empty without a scaler."""
    p = _used(subject, contract)
    state = p.state_dict()
    _require(isinstance(state, dict), f"state_dict() returned {_shown(state)}; it must return a dict: {STATE_FIX}")
    if not contract.loss_scaling:
        _require(
            not state,
            f"state_dict() of a precision without a GradScaler returned the keys {sorted(state)}; it must be empty"
            f" ({subject.precision!r} has no scaler state to save)",
        )
        return
    wrong = _difference(state, _scaler_state(p))
    _require(
        not wrong,
        f"state_dict() {wrong}; it must hold the GradScaler's whole state as plain values, as"
        f" self.scaler.state_dict() returns it: {STATE_FIX}",
    )


@check(applies=_scaler)
def state_dict_before_first_step(subject: Subject, contract: Contract) -> None:
    """state_dict() of an object that has not stepped yet already holds the GradScaler's whole state."""
    p = subject.make()
    wrong = _difference(p.state_dict(), _scaler_state(p))
    _require(
        not wrong,
        f"before the first step, state_dict() {wrong}; a checkpoint taken then must hold the whole state too:"
        " return self.scaler.state_dict(), which reads a scaler that has not stepped (its _scale is None until then)",
    )


@check(applies=_scaler, targets=FABRIC)
def state_dict_is_a_snapshot(subject: Subject, contract: Contract) -> None:
    """The dict state_dict() returned does not change as training goes on: it holds values, not live state."""
    p = _used(subject, contract)
    state = p.state_dict()
    saved = copy.deepcopy(state)
    _train(p, subject, (math.inf, None))
    wrong = _difference(state, saved, exact_keys=True)
    _require(
        not wrong,
        f"after two more steps, the dict an earlier state_dict() returned {wrong} (what it held when returned):"
        " it changed with the training, so a checkpoint saved later records the wrong step. Return new plain values"
        " (self.scaler.state_dict() does), never the scaler's tensors or a dict the object keeps updating",
    )


@check(targets=FABRIC)
def load_state_dict_restores(subject: Subject, contract: Contract) -> None:
    """load_state_dict() of a state_dict() restores the whole scaler state in a fresh object."""
    p = _used(subject, contract)
    fresh = subject.make()
    fresh.load_state_dict(p.state_dict())
    wrong = _difference(_scaler_state(fresh), _scaler_state(p), exact_keys=True)
    _require(
        not wrong,
        f"after load_state_dict(state_dict()) a new object's GradScaler state {wrong}: load the whole state into the"
        f" scaler (self.scaler.load_state_dict(state)): {STATE_FIX}",
    )


@check(targets=FABRIC)
def state_dict_torch_save(subject: Subject, contract: Contract) -> None:
    """A state_dict() through torch.save and torch.load(weights_only=True) restores the whole state in a new object."""
    p = _used(subject, contract)
    buffer = io.BytesIO()
    torch.save(p.state_dict(), buffer)
    buffer.seek(0)
    try:
        loaded = torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise CheckFailed(
            f"torch.load(weights_only=True), as Lightning and Fabric load checkpoints, cannot read the state back:"
            f" {str(exc).splitlines()[0]}. state_dict() must hold only plain values and tensors"
        ) from None
    fresh = subject.make()
    fresh.load_state_dict(loaded)
    wrong = _difference(_scaler_state(fresh), _scaler_state(p), exact_keys=True)
    _require(
        not wrong,
        f"after torch.save, torch.load and load_state_dict() the GradScaler state {wrong}: state_dict() must hold"
        f" the scaler's state as plain values: {STATE_FIX}",
    )


@check()
def incompatible_state_dict(subject: Subject, contract: Contract) -> None:
    """load_state_dict() of a state that does not fit raises mixprec.StateDictError and changes nothing."""
    if contract.loss_scaling:
        bad_states: list[Any] = [{}, {"scale": 2.0}, ["not", "a", "dict"]]
        why = "an empty, partial or non-dict state holds no whole GradScaler state for it"
    else:
        bad_states = [dict(torch.amp.GradScaler("cpu", init_scale=8.0).state_dict())]
        why = f"{subject.precision!r} has no GradScaler to take it, and dropping it would lose the scale in silence"
    for bad in bad_states:
        p = subject.make()
        before = _scaler_state(p)
        try:
            p.load_state_dict(bad)
        except StateDictError as exc:
            _require(bool(str(exc)), f"load_state_dict({bad!r}) raised a StateDictError without a message")
        except Exception as exc:
            raise CheckFailed(
                f"load_state_dict({bad!r}) raised {type(exc).__name__}: {exc}; the contract wants"
                f" mixprec.StateDictError, with a message saying how to resume: {STATE_FIX}"
            ) from None
        else:
            raise CheckFailed(
                f"load_state_dict({bad!r}) accepted it, but {why}: it must raise mixprec.StateDictError. Lightning's"
                f" classes ignore such state: {STATE_FIX}"
            )
        wrong = _difference(_scaler_state(p), before, exact_keys=True)
        _require(not wrong, f"after the refused load_state_dict({bad!r}) the GradScaler state {wrong}; refuse first")

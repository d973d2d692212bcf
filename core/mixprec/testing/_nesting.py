"""The checks of contexts entered inside themselves: the state once the outer one exits, and nested init contexts.

Code nests the object's contexts without knowing it: a model that builds a sub-model inside
``module_init_context()``, a forward under ``fabric.autocast()`` that calls a helper entering it
again. A context that keeps what it saved on the object, rather than per entry, restores the inner
entry's state when the outer one exits: the checks here enter each context inside itself and
compare torch's global state (:mod:`mixprec.testing._global_state`) after the outer exit with the
state before the outer entry.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from mixprec._contract import Contract
from mixprec.testing._base import Subject, _require, check
from mixprec.testing._global_state import AUTOCAST_DEPTH, changes, snapshot

__all__ = ["nested_forward_context_restores_state", "nested_init_contexts"]

_FIX = (
    "Save the state on each entry and put that back on its exit (a new torch.autocast or context manager per"
    " call, never one kept on the object)"
)


def _after_nesting(
    subject: Subject,
    outer: Callable[[], AbstractContextManager[object]],
    inner: Callable[[], AbstractContextManager[object]],
    ignore: tuple[str, ...],
) -> str:
    """What differs, but ``ignore``, once the outer context exits from the state before it, with ``inner`` inside it."""
    before = snapshot(subject.device.type)
    with outer(), inner():
        pass
    return changes(before, snapshot(subject.device.type), ignore=ignore)


@check()
def nested_forward_context_restores_state(subject: Subject, contract: Contract) -> None:
    """Once the outer of two nested forward_context()s exits, torch's global state is as before the outer one
    (beyond what one alone leaves changed, which forward_context_restores_state reports)."""
    p = subject.make()
    _, known = _alone(subject, p.forward_context)
    leaked = _after_nesting(subject, p.forward_context, p.forward_context, ignore=tuple(known))
    _require(
        not leaked,
        f"after a forward_context() with another nested in it exits: {leaked}. It must leave the state it found,"
        f" however deeply it was nested. {_FIX}",
    )


def _creates() -> tuple[torch.dtype, torch.dtype]:
    """The dtypes of a new nn.Linear's weight and of a new tensor, as things stand."""
    return nn.Linear(2, 2).weight.dtype, torch.empty(2).dtype


def _alone(subject: Subject, context: Callable[[], AbstractContextManager[object]]) -> tuple[Any, set[str]]:
    """What ``context`` creates on its own, and the parts of the state it leaves changed on its own."""
    before = snapshot(subject.device.type)
    with context():
        created = _creates()
    after = snapshot(subject.device.type)
    return created, {name for name in before if before[name] != after[name]}


@check()
def nested_init_contexts(subject: Subject, contract: Contract) -> None:
    """module_init_context() and tensor_init_context() nest: inside each other they create parameters and tensors as
    the inner one does alone, leaving the inner one keeps the outer one in effect, and leaving both restores the
    state (beyond what one alone leaves changed, which init_contexts_restore_state reports)."""
    p = subject.make()
    device_type = subject.device.type
    contexts = {"module_init_context()": p.module_init_context, "tensor_init_context()": p.tensor_init_context}
    alone = {name: _alone(subject, context) for name, context in contexts.items()}
    for outer_name, outer in contexts.items():
        for inner_name, inner in contexts.items():
            what = f"{inner_name} nested in {outer_name}"
            before = snapshot(device_type)
            with outer():
                outer_state = snapshot(device_type)
                with inner():
                    inside = _creates()
                after_inner = changes(outer_state, snapshot(device_type), ignore=(AUTOCAST_DEPTH,))
                still = _creates()
            _require(
                inside == alone[inner_name][0],
                f"inside {what} a new nn.Linear's weight and a new tensor are {_shown(inside)}; {inner_name} alone"
                f" creates them {_shown(alone[inner_name][0])}. {_FIX}",
            )
            _require(
                not after_inner and still == alone[outer_name][0],
                f"after {what} exits, inside {outer_name}: {after_inner or f'new ones are {_shown(still)}'}. Leaving"
                f" the inner one must restore the state the outer one set. {_FIX}",
            )
            known = alone[outer_name][1] | alone[inner_name][1]
            leaked = changes(before, snapshot(device_type), ignore=tuple(known))
            _require(not leaked, f"after {what} and then {outer_name} exit: {leaked}. {_FIX}")


def _shown(created: tuple[torch.dtype, torch.dtype]) -> str:
    return f"{created[0]} and {created[1]}"

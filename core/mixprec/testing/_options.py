"""The check of the option values a contract names: the object built with each has the effect the contract says.

A backend option that changes what a precision does (``module_filter``: which layers "fp8-mixed"
converts) can be ignored without any other check noticing: the object still does everything
without it. A contract names values to try as :class:`mixprec.OptionTrial` (``Contract.option_trials``),
each with its effect: which layers of the suite's conversion model are then converted, or, for
options that are not about conversion, an output that differs from that of an object built
without them (before or after a step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mixprec._contract import Contract, OptionTrial
from mixprec._errors import PrecisionError
from mixprec.testing._base import CheckFailed, Subject, _require, check
from mixprec.testing._conversion import _data, _plain, _unit

__all__ = ["option_trials_applied"]


def _has_trials(contract: Contract) -> bool:
    return bool(contract.option_trials)


def _shown(trial: OptionTrial) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in trial.options.items())


def _converted(p: Any, subject: Subject, contract: Contract) -> list[str]:
    """The layers of the conversion model that ``p.convert_module`` replaces by a module of another class."""
    plain = dict(_plain(subject, contract).named_modules())
    converted = p.convert_module(_plain(subject, contract))
    return sorted(
        name for name, module in converted.named_modules() if name and type(module) is not type(plain.get(name))
    )


def _output(p: Any, subject: Subject, contract: Contract) -> torch.Tensor:
    """The conversion model's output through ``p`` after one SGD step through ``p``: options may change either."""
    model = p.convert_module(_plain(subject, contract))
    x, y = _data(_unit(contract), str(subject.device))
    with p.forward_context():
        out = model(p.convert_input(x))
    if subject.target == "fabric":  # the Trainer's objects step through the Trainer's loop, with a closure
        p.backward(F.mse_loss(p.convert_output(out).float(), y), model)
        p.optimizer_step(torch.optim.SGD(model.parameters(), lr=0.05))
    with torch.no_grad(), p.forward_context():
        after: torch.Tensor = model(p.convert_input(x))
    return after


@check(applies=_has_trials)
def option_trials_applied(subject: Subject, contract: Contract) -> None:
    """Each option value the contract names (option_trials) is taken, and the object built with it has the effect
    the contract says: of the layers converted without it, exactly those it names, or another output or step than
    without it."""
    for trial in contract.option_trials:
        try:
            p = subject.make(**trial.options)
        except PrecisionError as exc:
            raise CheckFailed(
                f"get_precision(..., {_shown(trial)}) raised {type(exc).__name__}: {exc}. The contract names this"
                " option value: the backend must take it"
            ) from None
        if trial.converts is not None:
            # Of the layers converted without the options: which layers are converted at all is for the conversion
            # checks to say.
            without = _converted(subject.make(), subject, contract)
            expected = sorted(set(trial.converts) & set(without))
            converted = _converted(p, subject, contract)
            _require(
                converted == expected,
                f"with {_shown(trial)}, convert_module converts the layers {converted} of the suite's conversion model,"
                f" without them {without}; the contract says {sorted(trial.converts)} of them: the object must apply"
                " the option",
            )
        else:
            same = torch.equal(_output(p, subject, contract), _output(subject.make(), subject, contract))
            _require(
                not same,
                f"an object built with {_shown(trial)} computes the very output, and takes the very step, of one built"
                " without it: the option has no effect; the object must apply it",
            )

"""What :func:`mixprec.tune` does unless told otherwise; torch-free, so that ``mixprec --help`` can show it."""

from __future__ import annotations

__all__ = [
    "BASELINE",
    "DEFAULT_BUDGET_S",
    "DEFAULT_MAX_DRIFT",
    "DEFAULT_STEPS",
    "MIN_GAIN",
    "ROUNDS",
    "WARM_UP_STEPS",
]

#: The precision every other is compared with; always measured.
BASELINE = "32-true"
#: Wall-clock seconds tune may spend measuring, unless the caller says otherwise.
DEFAULT_BUDGET_S = 30.0
#: The most training steps each precision trains, unless the caller says otherwise.
DEFAULT_STEPS = 100
#: The largest relative difference from fp32's loss a precision may show and still count as safe.
DEFAULT_MAX_DRIFT = 0.1
#: How many turns the precisions take at most.
ROUNDS = 5
#: How much faster than fp32 another precision must be to be chosen: less is within the noise of a short
#: measurement, and fp32 is the safest.
MIN_GAIN = 1.03
#: The steps each precision trains before the rounds: one that pays one-time costs, one that estimates a step.
WARM_UP_STEPS = 2

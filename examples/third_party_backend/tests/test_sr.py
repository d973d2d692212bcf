"""What mixprec-sr promises beyond the conformance suite: rounding exact on average, small updates kept."""

from __future__ import annotations

import torch

import mixprec
from mixprec_sr.policy import decide
from mixprec_sr.precision import stochastic_round


def test_rounding_is_exact_on_average() -> None:
    x = torch.full((100_000,), 1 + 2**-10)  # an eighth of the way from 1 up to the next bfloat16, 1 + 2**-7
    rounded = stochastic_round(x, torch.Generator().manual_seed(0)).float()
    assert set(rounded.unique().tolist()) == {1.0, 1 + 2**-7}
    assert abs(rounded.mean().item() - (1 + 2**-10)) < 1e-4


def test_rounding_keeps_bfloat16_and_non_finite_values() -> None:
    x = torch.tensor([0.0, -2.5, 1.0, float("inf"), float("-inf"), float("nan")])
    rounded = stochastic_round(x, torch.Generator().manual_seed(0))
    assert torch.equal(rounded[:5], x[:5].bfloat16())
    assert rounded[5].isnan()


def test_small_updates_add_up_where_plain_bf16_true_loses_them() -> None:
    # Each SGD step subtracts 2**-10 from weights of 1.0: a quarter of the bfloat16 spacing below 1.
    final = {}
    for backend in ("core", "sr"):
        precision = mixprec.get_precision("bf16-true", "cpu", backend=backend)
        weights = torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
        optimizer = torch.optim.SGD([weights], lr=1.0)
        for _ in range(10):
            weights.grad = torch.full_like(weights, 2**-10)
            precision.optimizer_step(optimizer)
        final[backend] = weights.float().mean().item()
    assert final["core"] == 1.0
    assert abs(final["sr"] - (1 - 10 * 2**-10)) < 1e-3


def test_a_cpu_without_native_bfloat16_is_reported_slow() -> None:
    assert decide(mixprec.Device("cpu"), native_bf16=False).status == "slow"
    assert decide(mixprec.Device("cpu"), native_bf16=True).status == "available"
    assert decide(mixprec.Device("cpu", 1), native_bf16=True).status == "unavailable"

"""torch.compile(fullgraph=True) traces through the plugin's forward_context without a graph break.

Graph breaks are found by TorchDynamo while it traces Python, before any backend runs, and
``fullgraph=True`` turns each one into an error. The "eager" backend runs the captured graph as it
is, so these tests prove the absence of graph breaks without paying for Inductor's code generation
(seconds per graph on a CPU, and a C compiler).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import mixprec
from mixprec.precision import MIXED_DTYPES


@pytest.fixture(scope="module", params=["bf16-mixed", "16-mixed"])
def precision(request: pytest.FixtureRequest) -> Any:
    """mixprec's precision object for the CPU (fp16 may be slow here, which does not matter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixprec.PrecisionWarning)
        return mixprec.get_precision(request.param, "cpu", backend="cpu")


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    """Each test compiles from scratch: no cached graph hides a break."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))


def test_forward_context_inside_a_compiled_function_is_one_graph(precision: Any) -> None:
    net = model()

    @torch.compile(fullgraph=True, backend="eager")
    def forward(x: torch.Tensor) -> torch.Tensor:
        with precision.forward_context():
            out: torch.Tensor = net(x)
        return out

    out = forward(torch.randn(2, 8))
    assert out.dtype == MIXED_DTYPES[precision.precision]


def test_compiled_model_runs_under_forward_context_as_one_graph(precision: Any) -> None:
    net = model()
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    x = torch.randn(2, 8)
    with precision.forward_context():
        out = compiled(x)
        expected = net(x)
    assert out.dtype == MIXED_DTYPES[precision.precision]
    torch.testing.assert_close(out, expected)


def test_dynamo_explain_finds_no_graph_break_in_a_step_through_the_plugin(precision: Any) -> None:
    net = model()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with precision.forward_context():
            out: torch.Tensor = net(x)
        return out.float().sum()

    explanation = torch._dynamo.explain(forward)(torch.randn(2, 8))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1

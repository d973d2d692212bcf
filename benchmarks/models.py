"""The models and the training step the benchmarks share.

Three ways to run the same step, with the same math (the same casts, the same optimizer):

- ``plugin``/``lightning``: a precision object's calls in the order Lightning Fabric makes them
  (``convert_input`` of ``(args, kwargs)``, ``forward_context``, ``convert_output``,
  ``pre_backward``/``backward``/``post_backward``, ``optimizer_step``);
- ``hand``: the same step written with ``torch.autocast`` and, for fp16, ``torch.amp.GradScaler``.

Both keep the same tensors alive for the whole step (the output and the loss), so that memory
comparisons measure the precision object, not the step's variables.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MIXED_DTYPES", "Block", "Config", "build", "hand_step", "plugin_step"]

MIXED_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


class Block(nn.Module):
    """A GPT-style transformer block: pre-norm causal self-attention and a 4x GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, seq, 3, self.heads, dim // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(batch, seq, dim))
        out: Tensor = x + self.out(F.gelu(self.fc(self.norm2(x))))
        return out


@dataclass(frozen=True)
class Config:
    """A model and batch size: ``kind`` is "mlp" (width, depth) or "block" (dim, heads, seq, layers)."""

    name: str
    kind: str
    width: int
    depth: int
    batch: int
    seq: int = 1
    layers: int = 1

    def describe(self) -> str:
        if self.kind == "mlp":
            return f"MLP {self.depth}x{self.width}, batch {self.batch}"
        blocks = "GPT block" if self.layers == 1 else f"{self.layers} GPT blocks"
        return f"{blocks} dim {self.width}, {self.depth} heads, seq {self.seq}, batch {self.batch}"


def build(config: Config, device: str = "cpu", seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """The model (fp32) and one batch (input, target) for ``config``."""
    torch.manual_seed(seed)
    model: nn.Module
    if config.kind == "mlp":
        layers: list[nn.Module] = []
        for _ in range(config.depth):
            layers += [nn.Linear(config.width, config.width), nn.GELU()]
        model = nn.Sequential(*layers, nn.Linear(config.width, config.width))
        shape: tuple[int, ...] = (config.batch, config.width)
    elif config.kind == "block":
        blocks = [Block(config.width, config.depth) for _ in range(config.layers)]
        model = blocks[0] if config.layers == 1 else nn.Sequential(*blocks)
        shape = (config.batch, config.seq, config.width)
    else:
        raise ValueError(f"unknown model kind {config.kind!r}")
    model = model.to(device)
    x = torch.randn(shape, device=device)
    y = torch.randn(shape, device=device) / math.sqrt(config.width)
    return model, x, y


def plugin_step(
    precision: Any, model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor
) -> Callable[[], None]:
    """One training step through ``precision``'s calls, in the order Fabric makes them."""

    def step() -> None:
        args, kwargs = precision.convert_input(((x,), {}))
        with precision.forward_context():
            out = model(*args, **kwargs)
        out = precision.convert_output(out)
        loss = F.mse_loss(out, y)
        precision.pre_backward(loss, model)
        precision.backward(loss, model)
        precision.post_backward(loss, model)
        precision.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    return step


def hand_step(
    precision: str,
    device: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
) -> Callable[[], None]:
    """The same step written by hand: ``torch.autocast`` (and ``GradScaler`` for fp16), or plain fp32."""
    dtype = MIXED_DTYPES.get(precision)
    if dtype is None and precision != "32-true":
        raise ValueError(f"no hand-written step for {precision!r}")
    scaler = torch.amp.GradScaler(device) if precision == "16-mixed" else None

    def step() -> None:
        if dtype is None:
            out = model(x)
        else:
            with torch.autocast(device, dtype=dtype):
                out = model(x.to(dtype))
            out = out.to(torch.get_default_dtype())
        loss = F.mse_loss(out, y)
        if scaler is None:
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        else:
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step

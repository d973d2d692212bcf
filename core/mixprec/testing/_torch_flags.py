"""torch's process-wide switches beyond autocast and dtypes, and the check that nothing a precision does changes them.

These change how every later computation in the process runs, on the CPU and on GPUs alike:
whether cuDNN benchmarks its algorithms or runs deterministically, whether matmuls and
convolutions may use TF32 or reduce in float16/bfloat16, which attention kernels may run, whether
oneDNN is used, whether the CPU flushes denormal numbers to zero. A precision object may use them
inside its contexts only if it puts them back; none is its to keep. Each is read without starting a
device runtime (no CUDA initialisation). The flush-denormal mode has no getter in torch: it is read
by whether a denormal float64 survives a multiplication on this thread.

:func:`restored` puts every switch back after a case, so that a backend that leaks one fails the
check that caught it, and no other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
import torch.backends.cuda
import torch.backends.cudnn
import torch.backends.mha
import torch.backends.mkldnn
import torch.backends.opt_einsum

from mixprec._contract import Contract
from mixprec.testing._base import Subject, _require, check
from mixprec.testing._global_state import State, changes

__all__ = ["restored", "snapshot", "torch_flags_restored"]

#: A denormal float64 (the smallest normal is 2**-1022): it survives ``* 1.0`` unless denormals are flushed.
_DENORMAL = 2.0**-1060


def _flush_denormal() -> bool:
    return float(torch.tensor([_DENORMAL], dtype=torch.float64).mul(1.0)) == 0.0


def _set_flush_denormal(mode: bool) -> None:
    torch.set_flush_denormal(mode)


def _attribute(owner: Any, name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    return (lambda: getattr(owner, name)), (lambda value: setattr(owner, name, value))


def _tf32() -> dict[str, tuple[Callable[[], Any], Callable[[Any], None]]]:
    """cuDNN's and oneDNN's TF32 settings, read and written through torch's fp32_precision API where it has one.

    From torch 2.9 on, reading a legacy flag (``cudnn.allow_tf32``) raises once the new API set conv and RNN
    apart, and writing one mixes the two APIs, after which torch refuses to read either. The matmul settings
    are those of the float32 matmul precision, which :mod:`mixprec.testing._global_state` covers.
    """
    cudnn: Any = torch.backends.cudnn  # typed by torch as modules, which they are not at run time
    mkldnn: Any = torch.backends.mkldnn
    if not hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        return {"torch.backends.cudnn.allow_tf32": _attribute(cudnn, "allow_tf32")}
    owners = {
        "torch.backends": torch.backends,
        "torch.backends.cudnn": cudnn,
        "torch.backends.cudnn.conv": cudnn.conv,
        "torch.backends.cudnn.rnn": cudnn.rnn,
        "torch.backends.mkldnn": mkldnn,
        "torch.backends.mkldnn.conv": mkldnn.conv,
        "torch.backends.mkldnn.rnn": mkldnn.rnn,
    }
    return {f"{name}.fp32_precision": _attribute(owner, "fp32_precision") for name, owner in owners.items()}


def _entries() -> dict[str, tuple[Callable[[], Any], Callable[[Any], None]]]:
    """Each switch by the name a user sets it by, with how to read it and how to put it back."""
    cuda, matmul, cudnn = torch.backends.cuda, torch.backends.cuda.matmul, torch.backends.cudnn
    entries = {
        f"torch.backends.cudnn.{name}": _attribute(cudnn, name) for name in ("enabled", "benchmark", "deterministic")
    }
    entries.update(_tf32())
    entries.update(
        {
            f"torch.backends.cuda.matmul.{name}": _attribute(matmul, name)
            for name in ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction")
        }
    )
    entries.update(
        {
            "torch.backends.cuda.flash_sdp_enabled()": (cuda.flash_sdp_enabled, cuda.enable_flash_sdp),
            "torch.backends.cuda.mem_efficient_sdp_enabled()": (
                cuda.mem_efficient_sdp_enabled,
                cuda.enable_mem_efficient_sdp,
            ),
            "torch.backends.cuda.math_sdp_enabled()": (cuda.math_sdp_enabled, cuda.enable_math_sdp),
            "torch.backends.cuda.cudnn_sdp_enabled()": (cuda.cudnn_sdp_enabled, cuda.enable_cudnn_sdp),
            "torch.backends.mkldnn.enabled": _attribute(torch.backends.mkldnn, "enabled"),
            "torch.backends.opt_einsum.enabled": _attribute(torch.backends.opt_einsum, "enabled"),
            "torch.backends.mha.get_fastpath_enabled()": (
                torch.backends.mha.get_fastpath_enabled,
                torch.backends.mha.set_fastpath_enabled,
            ),
            "flush denormal (torch.set_flush_denormal)": (_flush_denormal, _set_flush_denormal),
        }
    )
    return entries


def snapshot() -> State:
    """Every switch as it is now."""
    return {name: read() for name, (read, _) in _entries().items()}


@contextmanager
def restored() -> Iterator[None]:
    """Put back every switch the body changed, however it ends."""
    before = snapshot()
    try:
        yield
    finally:
        for name, (read, write) in _entries().items():
            if read() != before[name]:
                write(before[name])


def _left_as_found(context: Callable[[], AbstractContextManager[object]], what: str) -> None:
    before = snapshot()
    with context():
        pass
    leaked = changes(before, snapshot())
    _require(
        not leaked,
        f"after {what} exits: {leaked}. These switches are the whole process's: change one only inside the"
        " context, and put it back on exit (try/finally around the yield)",
    )


@check()
def torch_flags_restored(subject: Subject, contract: Contract) -> None:
    """forward_context(), module_init_context(), tensor_init_context() and teardown() leave torch's process-wide
    switches as they were: cuDNN's benchmark and deterministic modes, the TF32 settings of cuDNN and oneDNN, the
    CUDA matmuls' reduced-precision reductions, the attention kernels, oneDNN, opt_einsum, the MHA fast path,
    flush-denormal."""
    p = subject.make()
    _left_as_found(p.forward_context, "forward_context()")
    _left_as_found(p.module_init_context, "module_init_context()")
    _left_as_found(p.tensor_init_context, "tensor_init_context()")
    before = snapshot()
    q = subject.make()
    q.convert_module(subject.model())
    q.teardown()
    leaked = changes(before, snapshot())
    _require(
        not leaked,
        f"after get_precision, convert_module and teardown(): {leaked}. Whatever the object changes in these"
        " process-wide switches, teardown() must put back; better, change them only inside a context",
    )

"""torchao's float8 training API, imported once, quietly, and without initialising CUDA.

Importing torchao on a CPU-only build of torch logs that its CUDA kernel libraries do not load
(``_C_mxfp8``, ``_C_cutlass_90a``) and that Triton is missing, kernels that float8 training does
not use, and torch logs a deprecation of torchao's pytree registration. None of it says anything
about fp8-mixed, so those records are dropped while torchao imports; every other message passes.

torchao asks ``torch.cuda.is_available()`` at import, which initialises the CUDA driver unless
torch counts GPUs through NVML; a process that forks afterwards (``strategy="ddp_fork"``) could
then not use CUDA in its children. ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` makes torch count through
NVML, as importing ``lightning.fabric`` and mixprec-cuda's ``create`` also set it.
"""

from __future__ import annotations

import logging
import os

__all__ = ["Float8Linear", "Float8LinearConfig", "Float8LinearRecipeName", "convert_to_float8_training"]

#: What torchao's import logs on a CPU-only torch, by the start of the message.
_NOISE = ("Failed to load ", "Warning: Detected no triton", "%s is an Enum subclass and is now natively supported")


def _is_signal(record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith(_NOISE))


_LOGGERS = [logging.getLogger(name) for name in ("torchao", "torchao.kernel.intmm", "torch.utils._pytree")]
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
for _logger in _LOGGERS:
    _logger.addFilter(_is_signal)
try:
    from torchao.float8 import (  # type: ignore[import-untyped]  # torchao ships no type information
        Float8LinearConfig,
        Float8LinearRecipeName,
        convert_to_float8_training,
    )
    from torchao.float8.float8_linear import Float8Linear  # type: ignore[import-untyped]
finally:
    for _logger in _LOGGERS:
        _logger.removeFilter(_is_signal)

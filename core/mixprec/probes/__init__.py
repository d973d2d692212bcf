"""What the hardware here computes, read without starting any device runtime: the probes backends decide with.

Every backend needs the same few facts (does this CPU compute bfloat16 natively? which compute
capability has ``cuda:1``? is there an MPS device?), and reading them wrongly costs users: a
private torch probe that moved, a CUDA context started before a fork. So the core reads them once,
for every backend, ours and third parties':

- :func:`cpu` gives the CPU's :class:`CPUFeatures` (native bfloat16 and float16);
- :func:`cuda` gives a :class:`CUDAProbe` of the visible CUDA GPUs (:class:`GPU`: name, compute
  capability, UUID), read through NVML without initialising CUDA (``pip install 'mixprec[cuda]'``);
- :func:`mps` gives an :class:`MPSProbe`: torch's and macOS's versions and whether MPS is usable;
- :func:`device_count` gives torch's count of any device type, or why it cannot count.

Importing this module imports neither torch nor lightning; each function imports torch when it is
first called. All are safe to call before a process forks. The results are frozen dataclasses: a
policy written as a pure function of one (``decide(precision, device, found)``) is tested by
handing it results made up for machines the tests do not run on.
"""

from __future__ import annotations

from mixprec.probes._count import device_count
from mixprec.probes._cpu import CPUFeatures, cpu
from mixprec.probes._cuda import GPU, CUDAProbe, cuda
from mixprec.probes._mps import MPSProbe, mps, release

__all__ = ["GPU", "CPUFeatures", "CUDAProbe", "MPSProbe", "cpu", "cuda", "device_count", "mps", "release"]

"""``mixprec new``: a complete backend distribution for one device type, ready to install and check.

What it writes is the smallest backend there is: it says that the standard mixed precisions run
wherever torch sees a device of the type, and builds them with
:func:`mixprec.precision.standard_precision`. The core serves the "true" precisions on every device
type, so the backend need not offer them. The author then refines ``availability`` (a precision
that is emulated on some devices is ``slow``) and adds what the device does differently.

The files are :mod:`string.Template` texts (``$name`` placeholders, so that the generated code's own
braces need no escaping). Names are bounded in length so that every generated line stays within
the line length its ``pyproject.toml`` sets for ruff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from mixprec._errors import PrecisionError

__all__ = ["FAMILIES", "MAX_NAME", "PRECISIONS", "Scaffold", "files", "scaffold", "scaffold_names"]

#: The precisions a scaffolded backend offers; the core's every-device backend serves the "true" ones.
PRECISIONS = ("bf16-mixed", "16-mixed")
#: The device types whose generated policy judges each precision from :mod:`mixprec.probes`, as our backends do.
FAMILIES = ("cpu", "cuda", "mps")
#: The longest backend name and device type ``mixprec new`` accepts.
MAX_NAME = 32

_NAME = re.compile(r"[a-z](?:[a-z0-9_]*[a-z0-9])?\Z")
_DEVICE_TYPE = re.compile(r"[a-z_][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Scaffold:
    """The names of a scaffolded backend, and where its files are (once written)."""

    #: The backend's name and the entry point's: what users pass to ``backend=`` and ``mixprec check``.
    backend: str
    device_type: str
    directory: Path
    #: The files written, relative to ``directory``.
    files: tuple[str, ...] = ()

    @property
    def distribution(self) -> str:
        """The distribution's name, as ``pip install`` and ``mixprec list`` show it: ``mixprec-<backend>``."""
        return "mixprec-" + self.backend.replace("_", "-")

    @property
    def family(self) -> str:
        """The device family whose probe the policy decides with: "cpu", "cuda" or "mps"; "" for any other type."""
        return self.device_type if self.device_type in FAMILIES else ""

    @property
    def package(self) -> str:
        """The import name of the package: ``mixprec_<backend>``."""
        return "mixprec_" + self.backend


def scaffold_names(name: str, device_type: str, directory: Path | None = None) -> Scaffold:
    """Check and normalise ``mixprec new``'s arguments; ``directory`` defaults to ``./mixprec-<name>``.

    ``name`` is lower-cased and each run of ``-``, ``_`` and ``.`` becomes one ``_``, as package
    installers compare names; the result must be a valid backend name that is also a Python
    identifier. ``device_type`` is taken as it is: a torch device type, without an index.

    Raises:
        PrecisionError: either is not usable, saying what would be.
    """
    backend = re.sub(r"[-_.]+", "_", name).lower()
    if not _NAME.match(backend) or len(backend) > MAX_NAME:
        raise PrecisionError(
            f"Backend name {name!r} cannot be used: after lower-casing and turning '-' and '.' into '_' it must"
            f" start with a letter, end with a letter or digit, hold only letters, digits and '_', and have at"
            f" most {MAX_NAME} characters, such as 'npu' or 'my_npu'."
        )
    if not _DEVICE_TYPE.match(device_type) or len(device_type) > MAX_NAME:
        kind = device_type.split(":", 1)[0].strip().lower()
        hint = f" Did you mean {kind!r}?" if _DEVICE_TYPE.match(kind) and kind != device_type else ""
        raise PrecisionError(
            f"Device type {device_type!r} cannot be used: --device takes a torch device type, without an index,"
            f" of lower-case letters, digits and '_' (at most {MAX_NAME}), such as 'cuda', 'xpu' or 'npu'.{hint}"
        )
    if directory is None:
        directory = Path("mixprec-" + backend.replace("_", "-"))
    return Scaffold(backend, device_type, directory)


def files(names: Scaffold, mixprec_version: str) -> dict[str, str]:
    """The distribution's files, by path relative to its directory, for mixprec ``mixprec_version`` and up."""
    values = {
        "backend": names.backend,
        "device_type": names.device_type,
        "distribution": names.distribution,
        "package": names.package,
        "precisions": ", ".join(f'"{p}"' for p in PRECISIONS),
        "mixprec_version": mixprec_version,
        "create": _CREATE,
    }
    family = names.family
    values["judged"] = Template(_JUDGED[family]).substitute(values)
    values["checked"] = Template(_CHECKED.get(family, _CHECKED[""])).substitute(values)
    values["policy"] = Template(_POLICY_HEAD + _POLICY_BODY[family]).substitute(values)
    return {
        path.replace("PACKAGE", names.package): Template(text).substitute(values) for path, text in _TEMPLATES.items()
    }


def scaffold(names: Scaffold, mixprec_version: str) -> Scaffold:
    """Write the distribution into ``names.directory``, which must not exist or be empty; return what was written.

    Raises:
        PrecisionError: the directory holds something, or a file cannot be written.
    """
    directory = names.directory
    if directory.is_file():
        raise PrecisionError(f"{directory} is a file: pass --dir with a new or empty directory.")
    if directory.is_dir() and any(directory.iterdir()):
        raise PrecisionError(
            f"{directory} exists and is not empty, and mixprec new never overwrites anything:"
            " pass --dir with a new or empty directory."
        )
    contents = files(names, mixprec_version)
    try:
        for relative, text in contents.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path, which no file system takes
        reason = f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PrecisionError(
            f"Cannot write the backend into {directory}: {reason}. Pass --dir with a directory you can write to."
        ) from None
    return Scaffold(names.backend, names.device_type, directory, tuple(contents))


_PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "mixprec backend: the standard mixed precisions on $device_type devices"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["mixprec>=$mixprec_version", "torch>=2.4"]

[project.optional-dependencies]
test = ["pytest>=8"]

# mixprec finds the plugin through this entry point; its name is the plugin's name.
[project.entry-points."mixprec.backends"]
$backend = "$package"

[tool.setuptools.packages.find]
include = ["$package*"]

[tool.setuptools.package-data]
$package = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 120

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF"]

[tool.mypy]
strict = true
files = ["$package", "tests"]
"""

_PLUGIN = '''\
"""The mixprec plugin of $distribution: its backend, described as data.

mixprec imports this module through the ``mixprec.backends`` entry point, in every process that
uses mixprec, so it imports neither torch nor lightning: the policy module does the work.
"""

from __future__ import annotations

from mixprec import Backend, hookimpl

__all__ = ["mixprec_backends"]


@hookimpl
def mixprec_backends() -> list[Backend]:
    return [
        Backend(
            name="$backend",
            device_type="$device_type",
            precisions=($precisions),
            policy="$package.policy",
            description="the standard mixed precisions on $device_type devices",
        ),
    ]
'''

_POLICY_HEAD = '''\
"""The policy of $distribution: where its precisions run, and building them.

$judged
"""

from __future__ import annotations

'''

_CREATE = """
#: Builds each precision as its standard contract says: autocast, and a GradScaler for "16-mixed".
create = standard_precision
"""

#: The policy's body for each device family mixprec has a probe for; "" for any other device type.
_POLICY_BODY = {
    "cpu": '''\
from mixprec import Availability, Device
from mixprec.precision import standard_precision
from mixprec.probes import CPUFeatures, cpu

__all__ = ["DTYPES", "availability", "create", "decide", "device_count"]
$create
#: The dtype each offered precision computes in.
DTYPES = {"bf16-mixed": "bfloat16", "16-mixed": "float16"}


def device_count() -> int:
    """There is one CPU."""
    return 1


def decide(precision: str, device: Device, features: CPUFeatures) -> Availability:
    """Available where the CPU computes the dtype natively; slow, saying so, where it emulates it."""
    if device.index not in (None, 0):
        return Availability.unavailable(f"there is one CPU device; {device} does not exist, use 'cpu'")
    dtype = DTYPES[precision]
    native = features.native(dtype)
    if native:
        return Availability.available(f"the CPU computes {dtype} natively ({', '.join(native)})")
    return Availability.slow(f"the CPU emulates {dtype}, which is slower than fp32 here; use '32-true'")


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, cpu())
''',
    "cuda": '''\
from mixprec import Availability, Device
from mixprec.precision import standard_precision
from mixprec.probes import CUDAProbe, cuda

__all__ = ["NATIVE", "availability", "create", "decide", "device_count"]
$create
#: The dtype of each offered precision, and the compute capability from which a GPU computes it natively.
NATIVE = {"bf16-mixed": ("bfloat16", (8, 0)), "16-mixed": ("float16", (7, 0))}


def device_count() -> int:
    """The CUDA GPUs this process can use, counted without initialising CUDA."""
    return cuda().device_count


def decide(precision: str, device: Device, found: CUDAProbe) -> Availability:
    """Available where the GPU computes the dtype natively; otherwise why not, and what to use."""
    reason = found.unavailable_reason(device.index)
    if reason is not None:
        return Availability.unavailable(reason)
    gpu, (dtype, needed) = found.gpu(device.index), NATIVE[precision]
    named = f"cuda:{found.ordinal(device.index)} ({gpu.name})"
    if gpu.capability is None or gpu.capability >= needed:  # capability None: a ROCm GPU
        return Availability.available(f"{named} computes {dtype} natively")
    if dtype == "bfloat16":
        return Availability.unavailable(f"{named} is {gpu.arch} and has no bfloat16; use '16-mixed'")
    return Availability.slow(f"{named} is {gpu.arch} and has no float16 tensor cores; use '32-true'")


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, cuda())
''',
    "mps": '''\
from mixprec import Availability, Device
from mixprec.precision import standard_precision
from mixprec.probes import MPSProbe, mps

__all__ = ["NEEDS", "availability", "create", "decide", "device_count"]
$create
#: The torch and macOS versions each offered precision needs on MPS ("16-mixed": torch's MPS GradScaler).
NEEDS = {"bf16-mixed": ((2, 6), (14, 0)), "16-mixed": ((2, 8), (12, 0))}


def device_count() -> int:
    """One MPS device where torch can use it, else none."""
    return 1 if mps().available else 0


def decide(precision: str, device: Device, found: MPSProbe) -> Availability:
    """Available where this torch and macOS run the precision on MPS; otherwise why not, and what to do."""
    if found.macos_version is None or not (found.built and found.available):
        return Availability.unavailable("no usable MPS device: MPS needs a macOS build of torch on macOS 12.3+")
    (torch_needs, macos_needs), here = NEEDS[precision], (found.torch_version, found.macos_version)
    if here[0] < torch_needs or here[1] < macos_needs:
        need = f"torch >= {torch_needs[0]}.{torch_needs[1]} and macOS >= {macos_needs[0]}.{macos_needs[1]}"
        return Availability.unavailable(f"{precision} on MPS needs {need}: upgrade, or use '32-true'")
    return Availability.available(f"{precision} runs on MPS with torch {here[0][0]}.{here[0][1]}")


def availability(precision: str, device: Device) -> Availability:
    return decide(precision, device, mps())
''',
    "": '''\
from mixprec import Availability, Device
from mixprec.precision import standard_precision
from mixprec.probes import device_count as torch_count

__all__ = ["availability", "create", "device_count"]
$create

def device_count() -> int:
    """How many devices of the type torch sees; 0 where this torch has no support for the type."""
    # torch.$device_type is torch's device module for the type; an out-of-tree device type's
    # extension adds it when imported, so import that extension at the top of this module.
    count = torch_count("$device_type")
    return count if isinstance(count, int) else 0


def availability(precision: str, device: Device) -> Availability:
    """Available on each device of the type that torch counts; unavailable, saying so, elsewhere."""
    count = device_count()
    if (device.index or 0) >= count:
        return Availability.unavailable(f"no {device} here: torch sees {count} {device.type} device(s)")
    # Not judged per device yet: say Availability.slow(reason) where a device emulates the dtype.
    return Availability.available(f"torch counts {device}; this policy does not judge its dtypes yet")
''',
}

#: What the policy's docstring says it judges, for each device family.
_JUDGED = {
    "cpu": """\
Each precision is "available" where this CPU computes its dtype natively and "slow" where it
emulates it (slower than fp32: "auto" passes it over), judged from mixprec's CPU probe
(``mixprec.probes.cpu()``) as mixprec-cpu judges it. There is one CPU device.""",
    "cuda": """\
Each precision is "available" on a GPU that computes its dtype natively (bfloat16 from compute
capability 8.0, float16 tensor cores from 7.0), "unavailable" or "slow" below, saying what to use,
judged from mixprec's CUDA probe (``mixprec.probes.cuda()``), which never initialises CUDA.""",
    "mps": """\
Each precision is "available" where this torch and macOS run it on MPS (bf16 autocast: torch 2.6
and macOS 14; fp16 with a GradScaler: torch 2.8), judged from mixprec's MPS probe
(``mixprec.probes.mps()``).""",
    "": """\
Both run on each $device_type device torch counts (``mixprec.probes.device_count()``); nothing
here judges yet whether a device computes their dtypes natively. Refine ``availability`` where
a precision is slow on some devices (``Availability.slow``, e.g. an emulated dtype) or cannot run
on them (``Availability.unavailable``), each with a reason users can act on.""",
}

#: What the README and the conformance test say the checks do on this machine, for each device family.
_CHECKED = {
    "cpu": """\
On the CPU, which is always there, `mixprec check` and `pytest` run every check: none is skipped
for want of a device. Where this CPU emulates a dtype, `mixprec list` shows the precision "slow",
and its checks still run.""",
    "": """\
Where a `$device_type` device is present, `mixprec check` and `pytest` run every check; where none
is, every check is skipped with the reason (no `$device_type` device here), never passed.""",
}

_CONFORMANCE = '''\
"""mixprec's conformance suite, run against the backend from this distribution's own pytest run.

One test per precision and check.

$checked
"""

from __future__ import annotations

from mixprec.testing import ConformanceTests


class TestConformance(ConformanceTests):
    backend = "$backend"
'''

_README = """\
# $distribution

A mixprec backend for `$device_type` devices, made with `mixprec new $backend --device $device_type`.
It offers $precisions and builds them as mixprec's standard precisions
(`mixprec.precision.standard_precision`); the core serves the "true" precisions on every device
type. Where they run, as its policy judges it:

$judged

## Install and check

```bash
pip install -e .
mixprec list --device $device_type   # the backend '$backend' and each precision's status here, with the reason
mixprec check $backend               # the conformance suite
pytest                        # the same suite, one test per precision and check
```

$checked

`mixprec check $backend --junit-xml report.xml` writes the results for CI; it exits 0 when no
check failed (skips are not failures), 1 when one did, 2 when the backend cannot be found.

## Layout

- `pyproject.toml`: the distribution; its `mixprec.backends` entry point `$backend` names the plugin.
- `$package/__init__.py`: the plugin, the backend described as data; it imports neither torch
  nor lightning, because mixprec loads it in every process that uses mixprec.
- `$package/policy.py`: where each precision runs (`availability`, `device_count`) and building
  it (`create`).
- `tests/test_conformance.py`: mixprec's conformance suite as pytest tests.

## Next

- Say `Availability.slow(reason)` where a device emulates a precision's dtype (slower than fp32:
  "auto" then passes it over), and `Availability.unavailable(reason)` where it cannot run.
- A `priority` above 0 in the plugin outranks the other backends for `$device_type`.
- Declare the optional capabilities of the conformance suite that the device lacks in
  `Backend(unsupported={...})`, each with the reason.
- mixprec's guide "Writing a mixprec backend" (docs/writing-a-backend.md) covers each step, and
  its section on `mixprec.probes` the hardware probes a policy decides with.
"""

_TEMPLATES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "PACKAGE/__init__.py": _PLUGIN,
    "PACKAGE/policy.py": "$policy",
    "PACKAGE/py.typed": "",
    "tests/test_conformance.py": _CONFORMANCE,
}

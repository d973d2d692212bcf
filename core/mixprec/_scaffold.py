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

__all__ = ["MAX_NAME", "PRECISIONS", "Scaffold", "files", "scaffold", "scaffold_names"]

#: The precisions a scaffolded backend offers; the core's every-device backend serves the "true" ones.
PRECISIONS = ("bf16-mixed", "16-mixed")
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
    }
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

_POLICY = '''\
"""The policy of $distribution: where its precisions run, and building them.

Both run wherever torch sees a $device_type device. Refine :func:`availability` where a precision is
slow on some devices (``Availability.slow``, e.g. an emulated dtype) or cannot run on them
(``Availability.unavailable``), each with a reason users can act on.
"""

from __future__ import annotations

import torch
from mixprec import Availability, Device
from mixprec.precision import standard_precision

__all__ = ["availability", "create", "device_count"]

#: Builds each precision as its standard contract says: autocast, and a GradScaler for "16-mixed".
create = standard_precision


def device_count() -> int:
    """How many devices of the type torch sees; 0 where this torch has no support for the type."""
    # torch.$device_type is torch's device module for the type; an out-of-tree device type's
    # extension adds it when imported, so import that extension at the top of this module.
    count = getattr(getattr(torch, "$device_type", None), "device_count", None)
    return int(count()) if callable(count) else 0


def availability(precision: str, device: Device) -> Availability:
    """Available on each device of the type that is present; unavailable, saying so, elsewhere."""
    count = device_count()
    if (device.index or 0) < count:
        return Availability.available()
    return Availability.unavailable(f"no {device} here: torch sees {count} $device_type device(s)")
'''

_CONFORMANCE = '''\
"""mixprec's conformance suite, run against the backend from this distribution's own pytest run.

One test per precision and check; each is skipped, with the reason, where no device of the type is
present ($device_type).
"""

from __future__ import annotations

from mixprec.testing import ConformanceTests


class TestConformance(ConformanceTests):
    backend = "$backend"
'''

_README = """\
# $distribution

A mixprec backend for `$device_type` devices, made with `mixprec new $backend --device $device_type`.
It offers $precisions wherever torch sees a `$device_type` device, and builds them as
mixprec's standard precisions (`mixprec.precision.standard_precision`); the core serves the "true"
precisions on every device type.

## Install and check

```bash
pip install -e .
mixprec list --device $device_type   # the backend '$backend' and its status here
mixprec check $backend               # the conformance suite; every check skipped, with the reason, without a device
pytest                        # the same suite, one test per precision and check
```

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
- mixprec's guide "Writing a mixprec backend" (docs/writing-a-backend.md) covers each step.
"""

_TEMPLATES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "PACKAGE/__init__.py": _PLUGIN,
    "PACKAGE/policy.py": _POLICY,
    "PACKAGE/py.typed": "",
    "tests/test_conformance.py": _CONFORMANCE,
}

"""Where ``tune`` keeps its measurements: one JSON file per key in the user's cache directory.

The key is a hash of everything the measurement depends on (:func:`key_material`): the model's
structure, module types and parameter shapes and dtypes, the example's shapes and dtypes, the
device's name and capability, the versions of torch, mixprec and every backend installed, and the
arguments of the call. The directory is ``$MIXPREC_CACHE_DIR/tune``, else
``$XDG_CACHE_HOME/mixprec/tune``, else ``~/.cache/mixprec/tune``.

A file that cannot be read or does not hold a measurement is ignored with a
:class:`~mixprec.PrecisionWarning` (tune then measures again and replaces it); a file is written
whole or not at all (a temporary file in the same directory, then ``os.replace``), and a
directory that cannot be written is a warning too: the cache never makes tune fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mixprec._errors import PrecisionWarning
from mixprec._settings import env_flag

__all__ = ["FORMAT", "cache_directory", "cache_key", "device_identity", "key_material", "read", "refresh", "write"]

#: The version of the file format; a file of another format is ignored (and replaced).
FORMAT = 1


def cache_directory() -> Path:
    """The directory tune's cache files live in (see the module)."""
    root = os.environ.get("MIXPREC_CACHE_DIR")
    if root:
        return Path(root) / "tune"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "mixprec" / "tune"


def refresh(flag: bool | None) -> bool:
    """Whether to measure again whatever the cache holds: ``flag``, or ``MIXPREC_TUNE_REFRESH`` when it is None."""
    return env_flag("MIXPREC_TUNE_REFRESH") if flag is None else flag


def device_identity(device: torch.device) -> dict[str, Any]:
    """The device's name and capability, as far as torch tells them without more than tune does anyway."""
    if device.type == "cpu":
        return {"type": "cpu", "name": _cpu_name(), "capability": torch.backends.cpu.get_cpu_capability()}
    module = torch.get_device_module(device.type)
    identity: dict[str, Any] = {"type": device.type}
    for name in ("get_device_name", "get_device_capability"):
        reader = getattr(module, name, None)
        if reader is not None:
            identity[name.removeprefix("get_device_")] = reader(device)
    return identity


#: Where Linux names the CPU; read with undecodable bytes replaced, as the probes read it.
CPUINFO = Path("/proc/cpuinfo")


def _cpu_name() -> str:
    try:
        for line in CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def key_material(
    model: torch.nn.Module, example: Any, device: torch.device, versions: Mapping[str, str], call: Mapping[str, Any]
) -> dict[str, Any]:
    """Everything a measurement depends on, as JSON-ready data; ``call`` holds the call's own arguments."""
    return {
        "model": repr(model),
        "modules": sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()}),
        "parameters": [[name, list(t.shape), str(t.dtype)] for name, t in model.named_parameters()],
        "buffers": [[name, list(t.shape), str(t.dtype)] for name, t in model.named_buffers()],
        "example": _shapes(example),
        "device": device_identity(device),
        "torch": torch.__version__,
        "versions": dict(sorted(versions.items())),
        "call": dict(call),
    }


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, Mapping):
        return {str(k): _shapes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value]
    return f"{type(value).__name__}:{value!r}"[:200]


def cache_key(material: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:32]


def read(key: str) -> dict[str, Any] | None:
    """The measurement stored under ``key``, or None (absent, or unreadable with a warning)."""
    path = cache_directory() / f"{key}.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        _warn(path, f"cannot be read ({exc})")
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # malformed, nested too deep, or an int of too many digits
        _warn(path, f"is not valid JSON ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("result"), dict):
        _warn(path, f"does not hold a measurement of format {FORMAT}")
        return None
    result: dict[str, Any] = data["result"]
    return result


def write(key: str, material: Mapping[str, Any], result: Mapping[str, Any]) -> Path | None:
    """Store ``result`` under ``key`` atomically; the path, or None (with a warning) where it cannot be written."""
    directory = cache_directory()
    path = directory / f"{key}.json"
    text = json.dumps({"format": FORMAT, "key": dict(material), "result": dict(result)}, indent=1, default=str)
    temporary: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, suffix=".tmp", delete=False) as tmp:
            temporary = tmp.name
            tmp.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        warnings.warn(
            f"mixprec tune could not store its measurement in {directory} ({exc}); the next run will measure again."
            " Set MIXPREC_CACHE_DIR to a directory you can write to.",
            PrecisionWarning,
            stacklevel=3,
        )
        return None
    return path


def _warn(path: Path, problem: str) -> None:
    warnings.warn(
        f"mixprec tune's cache file {path} {problem}; it is ignored and the model is measured again.",
        PrecisionWarning,
        stacklevel=4,
    )

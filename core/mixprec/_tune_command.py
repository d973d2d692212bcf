"""``mixprec tune MODULE:FACTORY``: :func:`mixprec.tune` on a model a user's function builds, as a table.

``FACTORY`` is a function of ``MODULE`` (a module importable from the current directory, or a
``.py`` file's path) that takes no arguments and returns ``(model, example)`` or ``(model,
example, loss_fn)``. What is measured, the budget and the progress go to stderr; the table (or
``--json``) to stdout.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mixprec._errors import PrecisionError

__all__ = ["TuneSettings", "load_factory", "run"]


@dataclass(frozen=True)
class TuneSettings:
    """What ``mixprec tune`` measures, from its command line."""

    factory: str
    device: str | None
    candidates: Sequence[str] | None
    budget_s: float
    steps: int
    refresh: bool
    as_json: bool = False


def load_factory(spec: str) -> Callable[[], Any]:
    """The function ``spec`` ("MODULE:FACTORY" or "path/to/file.py:FACTORY") names; a PrecisionError saying why not."""
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise PrecisionError(
            f"{spec!r} is not MODULE:FACTORY: name a module (or a .py file) and the function in it that returns"
            " (model, example), e.g. 'mymodels:make_model'."
        )
    module = _import(module_name)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        what = "is not callable" if factory is not None else "does not exist"
        raise PrecisionError(f"{attribute!r} in {module_name!r} {what}: name a function that returns (model, example).")
    return factory  # type: ignore[no-any-return]


def _import(name: str) -> ModuleType:
    try:
        if name.endswith(".py"):
            path = Path(name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.is_file():
                raise PrecisionError(f"{name!r} is not a Python file: pass the path of an existing .py file.")
            return _run_file(path, spec)
        # As `python -m` does, the current directory is where a user's own modules are found.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(name)
    except PrecisionError:
        raise
    except Exception as exc:
        raise PrecisionError(
            f"Importing {name!r} failed ({type(exc).__name__}: {exc}): pass a module importable from the current"
            " directory, or the path of a .py file."
        ) from exc


def _run_file(path: Path, spec: importlib.machinery.ModuleSpec) -> ModuleType:
    """The module of a .py file, run as ``python FILE`` would find its imports: its own directory first on the path.

    It is in ``sys.modules`` while it runs, as an imported module is, so that what needs its module
    there (``dataclasses`` under ``from __future__ import annotations``, pickling) works; unless a module
    of its name is imported already, which it leaves in place.
    """
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = importlib.util.module_from_spec(spec)
    # A file named as a module already imported (json.py) must not replace it for everyone else.
    registered = sys.modules.setdefault(spec.name, module) is module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        if registered:
            del sys.modules[spec.name]
        raise
    return module


def _built(spec: str, factory: Callable[[], Any]) -> tuple[Any, Any, Any]:
    """``(model, example, loss_fn or None)`` from the factory, or a PrecisionError saying what it returned."""
    try:
        made = factory()
    except Exception as exc:
        raise PrecisionError(f"{spec}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, tuple) or len(made) not in (2, 3):
        raise PrecisionError(
            f"{spec}() returned {type(made).__name__}, not (model, example) or (model, example, loss_fn):"
            " return one of those tuples."
        )
    model, example, *rest = made
    return model, example, rest[0] if rest else None


def run(settings: TuneSettings) -> int:
    """Measure and print; return the exit status."""
    import mixprec
    from mixprec.bench import Progress

    model, example, loss_fn = _built(settings.factory, load_factory(settings.factory))
    where = settings.device or "the best device present"
    print(
        f"mixprec tune: {settings.factory} on {where}: budget {settings.budget_s:g} s (--budget-s),"
        f" at most {settings.steps} steps per precision (--steps)",
        file=sys.stderr,
    )
    bar = Progress("measuring", 1.0, sys.stderr)
    try:
        result = mixprec.tune(
            model,
            example,
            device=settings.device,
            loss_fn=loss_fn,
            candidates=settings.candidates,
            budget_s=settings.budget_s,
            steps=settings.steps,
            refresh=settings.refresh or None,
            progress=lambda done: bar.advance(done - bar.done),
        )
    except TypeError as exc:  # what the factory returned is of the wrong type: the user's to fix
        raise PrecisionError(f"{settings.factory}(): {exc}") from None
    finally:
        bar.close()
    if settings.as_json:
        print(json.dumps({"factory": settings.factory, **result.to_dict()}, indent=2))
    else:
        print(report(result))
    return 0


def report(result: Any) -> str:
    """The table, the choice and why, what was cut or not measured, and how it was measured."""
    lines = [result.table(), "", f"tune picks {result.precision!r} ({result.backend}): {result.reason}"]
    lines += [f"cut: {line}" for line in result.cut]
    lines += [f"not measured: {precision}: {why}" for precision, why in result.not_measured]
    lines.append(f"Step times: {result.clock}, median over interleaved rounds; peak memory: {result.memory_method}.")
    if result.cached:
        lines.append("From the cache of an earlier run: --refresh measures again.")
    else:
        lines.append(f"Tuning took {result.seconds:.1f} s.")
    return "\n".join(lines)

"""Building a mutant: the installed precision classes, one of their modules mutated, as objects mixprec can hand out.

The source of every module in :data:`WORLD` is read at run time from the installed file
(``inspect.getsource``); nothing of it is copied into the repository. A mutant is one change to one
of those modules. Building it re-executes that module, changed, and every module after it in
:data:`WORLD`, unchanged, each in a fresh module namespace whose imports resolve as the original's
do, except that a name defined by a re-executed module resolves to the re-executed one. The last
module is :mod:`mixprec.precision`, so the mutant's objects come from mixprec's own builders
(``standard_precision(request)``): the mutated Lightning class with mixprec's mixins exactly where
the original has them.

Classes are re-executed as *overlays*: ``class MixedPrecision(Precision)`` becomes a subclass of the
installed ``MixedPrecision`` with the (mutated) body, whose zero-argument ``super()`` skips the
installed class. The class a builder instantiates is then composed of the overlays of every class
in the installed class's MRO, each placed just before the class it overlays. So every object is
still an instance of the installed classes (``isinstance(p, lightning.fabric...Precision)``, which
mixprec, Fabric and the Trainer check, holds), keeps its class's ``__qualname__`` (the Trainer's
checkpoint key), and runs the mutated code wherever the installed class would run the original.
"""

from __future__ import annotations

import ast
import builtins
import copyreg
import importlib
import inspect
import itertools
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.mutation.operators import Change, mutate

__all__ = ["FSDP_NAMES", "TARGETS", "WORLD", "Mutant", "World", "source", "target_of"]

#: The modules a mutant is built from, in the order they import each other: a module's dependencies come first.
WORLD = (
    "lightning.fabric.plugins.precision.precision",
    "lightning.fabric.plugins.precision.amp",
    "lightning.fabric.plugins.precision.half",
    "lightning.fabric.plugins.precision.double",
    "lightning.fabric.plugins.precision.fsdp",
    "mixprec._scaler",
    "mixprec._fabric",
    "lightning.pytorch.plugins.precision.precision",
    "lightning.pytorch.plugins.precision.amp",
    "lightning.pytorch.plugins.precision.half",
    "lightning.pytorch.plugins.precision.double",
    "lightning.pytorch.plugins.precision.fsdp",
    "mixprec._trainer",
    "mixprec.precision",
)
#: The modules mutated, each with the target whose classes it holds: Fabric's, the Trainer's, or both ("shared").
TARGETS: Mapping[str, str] = {
    "lightning.fabric.plugins.precision.precision": "fabric",
    "lightning.fabric.plugins.precision.amp": "fabric",
    "lightning.fabric.plugins.precision.half": "fabric",
    "lightning.fabric.plugins.precision.double": "fabric",
    "lightning.fabric.plugins.precision.fsdp": "fabric",
    "mixprec._fabric": "fabric",
    "lightning.pytorch.plugins.precision.precision": "trainer",
    "lightning.pytorch.plugins.precision.amp": "trainer",
    "lightning.pytorch.plugins.precision.half": "trainer",
    "lightning.pytorch.plugins.precision.double": "trainer",
    "lightning.pytorch.plugins.precision.fsdp": "trainer",
    "mixprec._trainer": "trainer",
    "mixprec._scaler": "shared",
}

#: mixprec's names that exist for the FSDP strategies only: their mutants count toward the "fsdp" target.
FSDP_NAMES = frozenset({"DeviceFSDP", "FSDPPrecision", "_lightning_scaler_ignored"})

_BASE = "_mutation_base_"


def target_of(module: str, function: str) -> str:
    """The target a mutant of ``function`` in ``module`` counts toward: "fabric", "trainer", "shared", or "fsdp" for
    the classes only the FSDP strategies get (Lightning's ``fsdp`` modules and mixprec's classes on them)."""
    if module.endswith(".fsdp") or function.split(".")[0] in FSDP_NAMES:
        return "fsdp"
    return TARGETS[module]


def source(module: str) -> str:
    """The source of the installed module ``module``, read from its file."""
    return inspect.getsource(importlib.import_module(module))


@dataclass(frozen=True)
class Mutant:
    """One change to one module of :data:`WORLD`: site ``index`` of ``operator`` in ``module``."""

    module: str
    operator: str
    index: int

    @property
    def id(self) -> str:
        """``module:operator:index``, unique in a run."""
        return f"{self.module}:{self.operator}:{self.index}"

    def tree(self) -> tuple[ast.Module, Change]:
        """The mutated module tree and what changed."""
        return mutate(source(self.module), self.operator, self.index)


class _Overlay(ast.NodeTransformer):
    """Make each top-level class a subclass of the installed class of its name, its ``super()`` skipping that class."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        for statement in node.body:
            if isinstance(statement, ast.ClassDef):
                statement.bases = [ast.Name(_BASE + statement.name, ast.Load())]
                statement.keywords = []
                for item in statement.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        _bind_super(item, _BASE + statement.name)
        return node


def _bind_super(function: ast.FunctionDef | ast.AsyncFunctionDef, base: str) -> None:
    positional = [*function.args.posonlyargs, *function.args.args]
    if not positional:
        return
    first = positional[0].arg
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "super"
            and not node.args
            and not node.keywords
        ):
            node.args = [ast.Name(base, ast.Load()), ast.Name(first, ast.Load())]


#: Every composed class of every world built in this process, by key, so that their objects pickle.
_CLASSES: dict[str, type] = {}
_keys = itertools.count()


def _restore(key: str) -> Any:
    cls: Any = _CLASSES[key]
    return cls.__new__(cls)


def _picklable(cls: type) -> None:
    """Pickle objects of ``cls`` by a key of this process: by its name pickle would find the installed class."""
    key = f"{next(_keys)}:{cls.__qualname__}"
    _CLASSES[key] = cls

    def reduce(obj: Any) -> tuple[Callable[[str], Any], tuple[str], dict[str, Any]]:
        return _restore, (key,), dict(obj.__dict__)

    copyreg.pickle(cls, reduce)


class World:
    """The modules of :data:`WORLD` with one of them mutated, built at the first :meth:`module` call.

    Args:
        tree: the mutated module's tree (None: nothing mutated, the installed modules are used as they are).
        mutated: the name of the module ``tree`` replaces.
    """

    def __init__(self, tree: ast.Module | None, mutated: str) -> None:
        self._tree = tree
        self._mutated = mutated
        self._modules: dict[str, types.ModuleType] = {}
        self._overlays: dict[type, type] = {}
        self._finals: dict[type, type] = {}
        self._replacements: dict[int, Any] = {}
        self._views: dict[str, types.ModuleType] = {}
        self._ancestors: set[str] = set()
        self._built = False
        self._error: Exception | None = None

    @classmethod
    def of(cls, mutant: Mutant) -> World:
        """The world of ``mutant``."""
        return cls(mutant.tree()[0], mutant.module)

    def module(self, name: str) -> types.ModuleType:
        """The module ``name`` as the mutant has it: re-executed if it is the mutated one or comes after it."""
        self._build()
        return self._modules.get(name) or importlib.import_module(name)

    def _build(self) -> None:
        """Execute the modules once; a module that fails to execute fails every later call the same way."""
        if self._error is not None:
            raise self._error
        if self._built:
            return
        self._built = True
        if self._tree is None:
            return
        try:
            self._execute_all()
        except Exception as exc:
            self._error = exc
            raise

    def _execute_all(self) -> None:
        assert self._tree is not None
        start = WORLD.index(self._mutated)
        for name in WORLD[start:]:
            parts = name.split(".")
            self._ancestors.update(".".join(parts[:i]) for i in range(1, len(parts)))
        for name in WORLD[start:]:
            tree = self._tree if name == self._mutated else ast.parse(source(name))
            self._execute(name, tree)
            self._views.clear()  # a view holds what was re-executed when it was made

    def _execute(self, name: str, tree: ast.Module) -> None:
        original = importlib.import_module(name)
        module = types.ModuleType(name, original.__doc__)
        namespace = module.__dict__
        namespace.update(
            {
                "__file__": original.__file__,
                "__package__": original.__package__,
                "__builtins__": {**vars(builtins), "__import__": self._import},
            }
        )
        classes = {s.name: getattr(original, s.name) for s in tree.body if isinstance(s, ast.ClassDef)}
        namespace.update({_BASE + cls_name: cls for cls_name, cls in classes.items()})
        self._modules[name] = module  # before executing: its own imports of itself resolve to it
        code = compile(
            ast.fix_missing_locations(_Overlay().visit(tree)), original.__file__ or name, "exec", dont_inherit=True
        )
        exec(code, namespace)
        for cls_name, installed in classes.items():
            self._overlays[installed] = namespace[cls_name]
        by_overlay = {id(overlay): self._final(installed) for installed, overlay in self._overlays.items()}
        for key, value in list(namespace.items()):
            if id(value) in by_overlay:
                namespace[key] = by_overlay[id(value)]
        for key, value in vars(original).items():
            new = namespace.get(key)
            if new is not value and isinstance(value, (type, types.FunctionType)) and value.__module__ == name:
                self._replacements[id(value)] = new

    def _final(self, installed: type) -> type:
        """The class a mutant instantiates for ``installed``: the overlays of its MRO, each before what it overlays."""
        if installed in self._finals:
            return self._finals[installed]
        bases = [self._overlays[k] for k in installed.__mro__ if k in self._overlays]
        if installed not in self._overlays:
            bases.insert(0, installed)
        namespace = {
            "__module__": installed.__module__,
            "__qualname__": installed.__qualname__,
            "__doc__": installed.__doc__,
        }
        metaclass: Any = type(installed)
        final = bases[0] if len(bases) == 1 else metaclass(installed.__name__, tuple(bases), namespace)
        _picklable(final)
        self._finals[installed] = final
        return final

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: tuple[str, ...] | None = (),
        level: int = 0,
    ) -> Any:
        return self._view(builtins.__import__(name, globals, locals, fromlist or (), level))

    def _view(self, module: Any) -> Any:
        """``module`` as the mutant's code sees it: re-executed, or a copy whose re-executed names are swapped in."""
        if not isinstance(module, types.ModuleType):
            return module
        name = module.__name__
        if name in self._modules:
            return self._modules[name]
        if name not in self._ancestors:
            return module
        if name in self._views:
            return self._views[name]
        view = types.ModuleType(name, module.__doc__)
        self._views[name] = view
        contents = dict(vars(module))
        for key, value in contents.items():
            if isinstance(value, types.ModuleType):
                contents[key] = self._view(value)
            elif id(value) in self._replacements:
                contents[key] = self._replacements[id(value)]
        vars(view).update(contents)
        return view

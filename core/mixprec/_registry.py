"""Discovery and registration of plugins: which backends exist in this process.

Discovery runs once per process, at first use, under a lock. Each installed entry point of the
group ``mixprec.backends`` is loaded on its own: a plugin that fails to import, whose hook raises,
or that describes itself wrongly is recorded as a :class:`Failure`, warned about once and skipped;
the rest keep working. A plugin is taken whole or not at all.

Name clashes are settled by one rule: plugins are taken in a fixed order (the core's built-in
plugin, then entry points sorted by entry-point name and then by distribution name), and the first
to claim a plugin name or a backend name keeps it. Every later claimant is a :class:`Failure`
whose message names both distributions; a plugin whose name is already claimed is never imported.

The registry's contents are an immutable :class:`Snapshot`; registering or unregistering a plugin
swaps in a new snapshot with a higher ``generation``. Each snapshot owns the resolver's caches for
its backends (:class:`~mixprec._caches.Caches`), so a swap empties them at once.

A plugin describes its backends as data and calls none of mixprec's API while it loads: a call
back into the registry from the thread that is loading plugins (a plugin module or hook calling
``get_precision``, ``available``, ``explain`` or ``register``) is a :class:`PluginError`, never a
deadlock on the registry's lock.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from mixprec._backend import Backend
from mixprec._caches import Caches
from mixprec._errors import PluginError, PrecisionWarning, shown
from mixprec._hookspec import ENTRY_POINT_GROUP, PROJECT_NAME, BackendSpec
from mixprec._import_lock import IMPORT_LOCK
from mixprec._settings import Settings

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["Failure", "Plugin", "Registered", "Registry", "Snapshot", "registry"]

BUILTIN_PLUGIN = "core"
_REENTERED = (
    "mixprec was called while it was loading plugins, from the plugin being loaded (its module or its"
    " mixprec_backends hook called get_precision, available, explain or register): a plugin describes its"
    " backends as data while it loads; make such calls in the backend's policy module, which runs later"
)


class Plugin(NamedTuple):
    """Where a plugin came from: its name and, for an installed one, its distribution."""

    name: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution is None:
            return f"plugin {self.name!r} (registered in-process)"
        return f"plugin {self.name!r} from distribution {self.distribution} {self.version}"


class Registered(NamedTuple):
    """A backend together with the plugin that provided it."""

    backend: Backend
    plugin: Plugin


class Failure(NamedTuple):
    """A plugin that was skipped, and why."""

    plugin: Plugin
    error: str

    def __str__(self) -> str:
        return f"{self.plugin} was skipped: {self.error}"


class Snapshot:
    """The registry's contents at one moment; never mutated but for the caches of what is learnt about them.

    Internal records here are NamedTuples and plain classes rather than dataclasses: they are built at
    import and on the first ``get_precision``, where a dataclass's class creation is a measurable cost.
    """

    __slots__ = ("_index", "backends", "caches", "failures", "generation", "plugins", "skipped", "strict")

    def __init__(
        self,
        generation: int,
        backends: Mapping[str, Registered],
        failures: tuple[Failure, ...] = (),
        skipped: tuple[tuple[Plugin, str], ...] = (),
        plugins: tuple[Plugin, ...] = (),
        strict: bool = False,
    ) -> None:
        self.generation = generation
        self.backends = backends
        self.failures = failures
        #: plugins deliberately not loaded (MIXPREC_BLOCK, MIXPREC_PLUGINS), with the reason.
        self.skipped = skipped
        self.plugins = plugins
        #: MIXPREC_STRICT as it was at discovery: a backend whose policy fails is then an error too.
        self.strict = strict
        #: What resolution learns about these backends: owned by this snapshot, so it dies with it.
        self.caches = Caches(strict)
        self._index: dict[str, tuple[Registered, ...]] = {}

    def for_device_type(self, device_type: str) -> tuple[Registered, ...]:
        """Backends serving ``device_type``, including those serving every device type."""
        found = self._index.get(device_type)
        if found is None:
            found = tuple(r for r in self.backends.values() if r.backend.device_type in (device_type, "*"))
            self._index[device_type] = found
        return found


class _Loader:
    """Builds a snapshot: one pluggy manager, each plugin registered and validated on its own."""

    def __init__(self, base: Snapshot | None) -> None:
        self.manager = pluggy.PluginManager(PROJECT_NAME)
        self.manager.add_hookspecs(BackendSpec)
        self.backends: dict[str, Registered] = dict(base.backends) if base else {}
        self.plugins: list[Plugin] = list(base.plugins) if base else []
        self.failures: list[Failure] = list(base.failures) if base else []

    def add(self, obj: Any, plugin: Plugin) -> None:
        """Register ``obj`` as ``plugin`` whole, or raise PluginError and leave nothing behind."""
        if any(p.name == plugin.name for p in self.plugins):
            holder = next(p for p in self.plugins if p.name == plugin.name)
            raise PluginError(f"the plugin name {plugin.name!r} is already taken by {holder}")
        try:
            registered = self.manager.register(obj, name=plugin.name)
        except Exception as exc:  # a third-party object: whatever inspecting it raises is the plugin's fault
            raise PluginError(f"pluggy rejected it: {exc}") from exc
        if registered is None:
            raise PluginError(f"pluggy does not take {type(obj).__name__} objects as plugins")
        try:
            described = self._describe(obj, plugin)
        except BaseException:
            self.manager.unregister(obj, name=plugin.name)
            raise
        self.plugins.append(plugin)
        for backend in described:
            self.backends[backend.name] = Registered(backend, plugin)

    def _describe(self, obj: Any, plugin: Plugin) -> list[Backend]:
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"it implements an unknown hook: {exc}") from exc
        impls = [i for i in self.manager.hook.mixprec_backends.get_hookimpls() if i.plugin is obj]
        if not impls:
            raise PluginError("it has no @mixprec.hookimpl function named mixprec_backends")
        described: list[Backend] = []
        for impl in impls:
            try:
                result = impl.function()
            except Exception as exc:
                raise PluginError(f"its mixprec_backends hook raised {type(exc).__name__}: {exc}") from exc
            if isinstance(result, Backend):
                result = [result]
            if not isinstance(result, Iterable) or isinstance(result, (str, bytes, Mapping)):
                raise PluginError(
                    f"its mixprec_backends hook returned {type(result).__name__}; return a list of mixprec.Backend"
                )
            try:
                items = list(result)
            except Exception as exc:
                raise PluginError(
                    f"iterating what its mixprec_backends hook returned raised {type(exc).__name__}: {exc}"
                ) from exc
            for item in items:
                if not isinstance(item, Backend):
                    raise PluginError(f"its mixprec_backends hook returned {item!r}, which is not a mixprec.Backend")
                described.append(item)
        names = [b.name for b in described]
        for name in names:
            if names.count(name) > 1:
                raise PluginError(f"it describes the backend {name!r} twice")
            if name in self.backends:
                raise PluginError(
                    f"the backend name {name!r} is already taken by {self.backends[name].plugin};"
                    " the plugin loaded first keeps a name (entry points load in order of name, then"
                    " distribution): block one with MIXPREC_BLOCK or rename it"
                )
        return described

    def snapshot(self, generation: int, skipped: tuple[tuple[Plugin, str], ...], strict: bool) -> Snapshot:
        return Snapshot(
            generation=generation,
            backends=MappingProxyType(dict(self.backends)),
            failures=tuple(self.failures),
            skipped=skipped,
            plugins=tuple(self.plugins),
            strict=strict,
        )


def _entry_points() -> list[EntryPoint]:
    # importlib.metadata costs more to import than pluggy: only discovery needs it.
    from importlib import metadata

    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _distribution(ep: EntryPoint) -> Plugin:
    dist = ep.dist
    if dist is None:
        return Plugin(ep.name)
    return Plugin(ep.name, dist.metadata["Name"] or dist.name, dist.version)


def _normalized(name: str | None) -> str:
    return (name or "").lower().replace("_", "-").replace(".", "-")


class Registry:
    """The process-wide set of backends, discovered lazily and at most once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: the thread holding the lock to load plugins: a plugin that calls back from it is refused, not deadlocked.
        self._loader_thread: int | None = None
        self._snapshot: Snapshot | None = None
        self._generation = 0

    def snapshot(self) -> Snapshot:
        """The current contents, discovering installed plugins on the first call."""
        snap = self._snapshot
        if snap is None:
            with self._loading():
                snap = self._snapshot
                if snap is None:
                    snap = self._discover()
                    self._snapshot = snap
        return snap

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object in this process; return its name. All or nothing."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        base = self.snapshot()
        with self._loading():
            base = self._snapshot or base
            loader = _Loader(base)
            plugin_name = str.__str__(name) if name else _canonical_name(plugin)
            try:
                loader.add(plugin, Plugin(plugin_name))
            except PluginError as exc:
                raise PluginError(f"Cannot register plugin {plugin_name!r}: {exc}") from None
            self._generation += 1
            self._snapshot = loader.snapshot(self._generation, base.skipped, base.strict)
        return plugin_name

    def unregister(self, name: str) -> None:
        """Remove a plugin that :meth:`register` added, with all its backends, in one swap. All or nothing."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        base = self.snapshot()
        with self._loading():
            base = self._snapshot or base
            plugin = next((p for p in base.plugins if p.name == name), None)
            if plugin is None or plugin.distribution is not None:
                raise PluginError(_not_registered(base, name, plugin))
            backends = {n: r for n, r in base.backends.items() if r.plugin != plugin}
            self._generation += 1
            self._snapshot = Snapshot(
                generation=self._generation,
                backends=MappingProxyType(backends),
                failures=base.failures,
                skipped=base.skipped,
                plugins=tuple(p for p in base.plugins if p != plugin),
                strict=base.strict,
            )

    def reset(self) -> None:
        """Forget everything; the next use discovers again (for tests)."""
        with self._loading():
            self._snapshot = None
            self._generation += 1

    @contextlib.contextmanager
    def _loading(self) -> Iterator[None]:
        """Hold the lock to change the registry; refuse a call back from a plugin this thread is loading.

        Loading imports plugin modules, so the import lock is taken first (see mixprec._import_lock): always
        in that order, so that the two locks never deadlock.
        """
        if self._loader_thread == threading.get_ident():
            raise PluginError(_REENTERED)
        with IMPORT_LOCK, self._lock:
            self._loader_thread = threading.get_ident()
            try:
                yield
            finally:
                self._loader_thread = None

    def _discover(self) -> Snapshot:
        settings = Settings.from_environ()
        loader = _Loader(None)
        from mixprec import _builtin

        loader.add(_builtin, Plugin(BUILTIN_PLUGIN, "mixprec", _version()))
        skipped: list[tuple[Plugin, str]] = []
        if settings.autoload:
            self._load_entry_points(loader, settings, skipped)
        else:
            skipped.extend((_distribution(ep), "MIXPREC_DISABLE_PLUGIN_AUTOLOAD is set") for ep in _entry_points())
        new = loader.failures
        if settings.strict and new:
            raise PluginError("MIXPREC_STRICT is set and plugins failed:\n" + "\n".join(f"  - {f}" for f in new))
        for failure in new:
            warnings.warn(str(failure), PrecisionWarning, stacklevel=4)
        self._generation += 1
        return loader.snapshot(self._generation, tuple(skipped), settings.strict)

    @staticmethod
    def _load_entry_points(loader: _Loader, settings: Settings, skipped: list[tuple[Plugin, str]]) -> None:
        eps = sorted(
            _entry_points(),
            key=lambda ep: (ep.name, _normalized(ep.dist.name if ep.dist else None), ep.value),
        )
        claimed = {p.name: p for p in loader.plugins}
        for ep in eps:
            plugin = _distribution(ep)
            if ep.name in claimed:
                loader.failures.append(
                    Failure(
                        plugin,
                        f"the plugin name {ep.name!r} is also claimed by {claimed[ep.name]}, which comes first"
                        " (the core's own plugin, then entry points by name and distribution) and keeps it;"
                        " uninstall one of them",
                    )
                )
                continue
            if ep.name in settings.block:
                skipped.append((plugin, "blocked by MIXPREC_BLOCK"))
                continue
            if settings.allow is not None and ep.name not in settings.allow:
                skipped.append((plugin, "not listed in MIXPREC_PLUGINS"))
                continue
            claimed[ep.name] = plugin
            try:
                obj = ep.load()
            except Exception as exc:
                loader.failures.append(Failure(plugin, f"importing {ep.value!r} raised {type(exc).__name__}: {exc}"))
                continue
            try:
                loader.add(obj, plugin)
            except PluginError as exc:
                loader.failures.append(Failure(plugin, str(exc)))
        for missing in sorted((settings.allow or frozenset()) - claimed.keys() - settings.block):
            loader.failures.append(
                Failure(Plugin(missing), "MIXPREC_PLUGINS names it, but no installed distribution provides it")
            )


def _not_registered(snap: Snapshot, name: str, plugin: Plugin | None) -> str:
    """Why ``name`` cannot be unregistered: only what ``register()`` added can be, and what to do instead."""
    if plugin is not None:
        return (
            f"Cannot unregister {plugin}: mixprec.unregister() removes only plugins that mixprec.register() added"
            f" in this process; to leave out an installed plugin, start the process with MIXPREC_BLOCK={name}"
        )
    registered = sorted(p.name for p in snap.plugins if p.distribution is None)
    listed = ", ".join(repr(n) for n in registered) if registered else "none"
    return (
        f"No plugin named {shown(name)} was registered in this process (registered with mixprec.register(): {listed})"
    )


def _canonical_name(plugin: Any) -> str:
    """The name a plugin registered without ``name=`` gets: its ``__name__``, else pluggy's id-based one."""
    try:
        found = getattr(plugin, "__name__", None)
    except Exception as exc:
        raise PluginError(
            f"Cannot register the {type(plugin).__name__} object: reading its __name__ raised"
            f" {type(exc).__name__}: {exc}; pass name='...'"
        ) from exc
    if found is None:
        return str(id(plugin))
    if not isinstance(found, str):
        raise PluginError(
            f"Cannot register the {type(plugin).__name__} object: its __name__ is a {type(found).__name__},"
            " not a str; pass name='...'"
        )
    return str.__str__(found) or str(id(plugin))


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("mixprec")
    except metadata.PackageNotFoundError:
        return None


registry = Registry()

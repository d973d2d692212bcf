"""The one lock under which mixprec imports at first use, so that any number of threads may start using it at once.

Python's imports are not safe from threads for packages with import cycles such as lightning and
torch: two threads importing one of them at the same time may get ``ImportError: cannot import
name ...``, ``AttributeError: partially initialized module`` or ``_DeadlockError``. mixprec imports
lazily (``import mixprec`` imports neither torch nor lightning), so its first calls are where those
imports happen. Every such path takes :data:`IMPORT_LOCK` first, and the first thread imports while
the others wait:

- mixprec's lazy names (``mixprec.get_precision``, ``mixprec.precision.AutocastPrecision``, ...);
- discovery and registration of plugins, which import entry-point modules (the registry's own
  lock is always taken inside this one, never the other way round);
- a backend's policy module, and every call of its functions (``availability``, ``device_count``,
  ``create``), since a policy may import lazily too (mixprec's own import torch and lightning there);
- the imports of lightning in :mod:`mixprec.precision`, the resolver and :mod:`mixprec.testing`.

The lock is re-entrant: what runs under it may take it again (a policy's ``create`` calling
:mod:`mixprec.precision`, which imports lightning under it). Once everything is imported, taking it
costs a fraction of a microsecond. A process forked while another thread holds it (a data loader's
workers, Lightning's "ddp_fork") starts with it free, as Python's own import lock does. Imports
neither torch nor lightning.
"""

from __future__ import annotations

import importlib
import os
import threading
from types import ModuleType

__all__ = ["IMPORT_LOCK", "import_module"]

#: Held by every lazy import of mixprec and every call into a backend's policy.
IMPORT_LOCK = threading.RLock()

if hasattr(os, "register_at_fork"):
    # The thread holding it is not copied into the child, which could never take it; threading and logging
    # reinitialise their locks the same way.
    os.register_at_fork(after_in_child=IMPORT_LOCK._at_fork_reinit)  # type: ignore[attr-defined]


def import_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` under :data:`IMPORT_LOCK`: whole, once, whatever other threads do."""
    with IMPORT_LOCK:
        return importlib.import_module(name)

"""The pluggy hook specification every mixprec plugin implements."""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from mixprec._backend import Backend

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "mixprec"
#: Installed plugins are found through this entry-point group; the entry point's name is the plugin's name.
ENTRY_POINT_GROUP = "mixprec.backends"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorate a plugin's ``mixprec_backends`` function with this.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class BackendSpec:
    @hookspec
    def mixprec_backends(self) -> Sequence[Backend]:  # type: ignore[empty-body]
        """Describe the backends this plugin provides.

        Return :class:`mixprec.Backend` descriptions: data only. The module holding this hook must
        not import torch or lightning; put that in the backend's policy module.
        """

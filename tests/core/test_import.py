"""What mixprec imports: ``import mixprec`` neither torch nor lightning; listing and explaining no lightning.

One fresh interpreter, the only place where what a call imports can be seen, runs ``import mixprec``,
``mixprec list``, ``available()`` and ``explain()`` with every installed plugin loaded, as users
run them, and records which plugin package, if any, was on the stack when lightning was imported:
so a plugin whose policy imports lightning is named by its own test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from typing import Any

import pytest

from mixprec import ENTRY_POINT_GROUP

pytestmark = pytest.mark.slow

LIGHTNING = ("lightning", "lightning_fabric", "pytorch_lightning")
#: Every installed plugin, by entry-point name, with the top-level package its entry point imports.
PLUGINS = {ep.name: ep.module.split(".")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}

PROBE = """
import contextlib, io, json, sys

lightning, plugin_packages = json.loads(sys.argv[1])
importers = set()

class Watch:
    # Sees every import first: when lightning is imported, note the plugin packages on the stack.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in lightning:
            frame = sys._getframe(1)
            while frame is not None:
                package = frame.f_globals.get("__name__", "").partition(".")[0]
                if package in plugin_packages:
                    importers.add(package)
                frame = frame.f_back
        return None

sys.meta_path.insert(0, Watch())

def loaded(*roots):
    return sorted(m for m in sys.modules if m.split(".")[0] in roots)

import mixprec
after_import = loaded("torch", *lightning, *plugin_packages)
from mixprec import cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = cli.main(["list"])
after_list = loaded(*lightning)
records = mixprec.available()
for record in records:
    if record.status != "failed":
        try:
            mixprec.explain(record.precision, record.device_type)
        except mixprec.PrecisionError:
            pass  # a device that is not here; what matters is what asking imported
after_explain = loaded(*lightning)
import mixprec.precision
after_builders = loaded(*lightning)
print(json.dumps({
    "after_import": after_import,
    "after_list": after_list,
    "after_explain": after_explain,
    "after_builders": after_builders,
    "code": code,
    "listed": out.getvalue(),
    "statuses": sorted({(r.plugin, r.status) for r in records}),
    "lightning_importers": sorted(importers),
}))
"""


@pytest.fixture(scope="module")
def probed() -> dict[str, Any]:
    """The probe's findings, from a fresh interpreter with every installed plugin and no MIXPREC_* setting."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MIXPREC_")}
    argument = json.dumps([LIGHTNING, sorted(set(PLUGINS.values()))])
    done = subprocess.run(
        [sys.executable, "-c", PROBE, argument], capture_output=True, text=True, check=True, timeout=120, env=env
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_import_mixprec_imports_neither_torch_nor_lightning_nor_a_plugin(probed: dict[str, Any]) -> None:
    # Also no plugin: discovery waits for the first use.
    assert probed["after_import"] == []


def test_mixprec_list_available_explain_and_the_builders_import_no_lightning(probed: dict[str, Any]) -> None:
    assert probed["code"] == 0
    assert "32-true" in probed["listed"]
    assert [probed["after_list"], probed["after_explain"], probed["after_builders"]] == [[], [], []]


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
def test_listing_and_explaining_import_no_lightning_through_this_plugin(probed: dict[str, Any], plugin: str) -> None:
    # The plugin loaded and its policy answered: the listing asked it something.
    statuses = {status for name, status in probed["statuses"] if name == plugin}
    assert statuses
    assert "failed" not in statuses
    assert PLUGINS[plugin] not in probed["lightning_importers"]

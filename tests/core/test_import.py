"""``import mixprec`` is cheap: it imports neither torch nor lightning, and ``mixprec list`` no lightning."""

from __future__ import annotations

import json
import subprocess
import sys

# One fresh interpreter for both checks: starting one costs more than everything it runs.
PROBE = """
import contextlib, io, json, sys

def loaded(*roots):
    return sorted(m for m in sys.modules if m.split(".")[0] in roots)

import mixprec
after_import = loaded("torch", "lightning", "lightning_fabric", "pytorch_lightning", "mixprec_cpu")
from mixprec import cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = cli.main(["list"])
print(json.dumps({
    "after_import": after_import,
    "after_list": loaded("lightning", "lightning_fabric", "pytorch_lightning"),
    "code": code,
    "listed_core": "32-true" in out.getvalue(),
}))
"""


def test_import_mixprec_imports_neither_torch_nor_lightning_and_mixprec_list_no_lightning() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(done.stdout)

    # Also no plugin: discovery waits for the first use.
    assert result["after_import"] == []
    assert result["code"] == 0
    assert result["listed_core"]
    assert result["after_list"] == []

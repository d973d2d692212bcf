"""``mixprec new NAME --device TYPE``: a backend distribution that installs, loads cheaply, passes ``mixprec check``."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mixprec
from mixprec import Availability, Device, Request
from mixprec._scaffold import FAMILIES, MAX_NAME, PRECISIONS, Scaffold, files, scaffold, scaffold_names
from mixprec.probes import GPU, CPUFeatures, CUDAProbe, MPSProbe
from tests.cli_runs import run_cli

LONGEST = "n" * MAX_NAME


def _files(name: str = "npu", device_type: str = "npu") -> dict[str, str]:
    return files(scaffold_names(name, device_type), mixprec.__version__)


def _load(path: Path, name: str) -> ModuleType:
    """Import the generated module at ``path`` as ``name``, without putting its directory on sys.path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _policy(tmp_path: Path, device_type: str) -> ModuleType:
    """The policy module generated for ``device_type``, imported."""
    names = scaffold(scaffold_names("gen", device_type, tmp_path / "gen"), mixprec.__version__)
    return _load(names.directory / names.package / "policy.py", f"{names.package}.policy")


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "backend", "distribution", "package"),
    [
        ("npu", "npu", "mixprec-npu", "mixprec_npu"),
        ("My-NPU", "my_npu", "mixprec-my-npu", "mixprec_my_npu"),
        ("acme.npu__v2", "acme_npu_v2", "mixprec-acme-npu-v2", "mixprec_acme_npu_v2"),
    ],
)
def test_the_name_is_normalised_as_installers_compare_names(
    name: str, backend: str, distribution: str, package: str
) -> None:
    names = scaffold_names(name, "npu")
    assert (names.backend, names.distribution, names.package) == (backend, distribution, package)
    assert names.directory == Path(distribution)


@pytest.mark.parametrize("name", ["", "2npu", "npu-", "_npu", "n p u", "npü", "npu/x", "n" * (MAX_NAME + 1)])
def test_a_name_that_is_no_backend_name_and_identifier_is_an_error(name: str) -> None:
    with pytest.raises(mixprec.PrecisionError, match="cannot be used: after lower-casing"):
        scaffold_names(name, "npu")


@pytest.mark.parametrize(("device_type", "hint"), [("cuda:0", "'cuda'"), ("CUDA", "'cuda'"), (" xpu", "'xpu'")])
def test_a_device_instead_of_a_device_type_is_an_error_with_a_hint(device_type: str, hint: str) -> None:
    with pytest.raises(mixprec.PrecisionError, match=f"Did you mean {hint}"):
        scaffold_names("npu", device_type)


@pytest.mark.parametrize("device_type", ["", "*", "1cuda", "cu-da", "d" * (MAX_NAME + 1)])
def test_a_string_that_is_no_device_type_is_an_error(device_type: str) -> None:
    with pytest.raises(mixprec.PrecisionError, match="--device takes a torch device type"):
        scaffold_names("npu", device_type)


# --- the files ------------------------------------------------------------------------------------


def test_the_distribution_has_its_entry_point_and_needs_this_mixprec() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and up
    project = tomllib.loads(_files("acme-npu")["pyproject.toml"])
    assert project["project"]["name"] == "mixprec-acme-npu"
    assert project["project"]["entry-points"]["mixprec.backends"] == {"acme_npu": "mixprec_acme_npu"}
    assert f"mixprec>={mixprec.__version__}" in project["project"]["dependencies"]
    assert project["tool"]["setuptools"]["package-data"] == {"mixprec_acme_npu": ["py.typed"]}


def test_it_writes_the_plugin_the_policy_a_conformance_test_and_a_readme() -> None:
    assert sorted(_files()) == [
        "README.md",
        "mixprec_npu/__init__.py",
        "mixprec_npu/policy.py",
        "mixprec_npu/py.typed",
        "pyproject.toml",
        "tests/test_conformance.py",
    ]


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_plugin_imports_only_mixprec() -> None:
    assert _imports(_files()["mixprec_npu/__init__.py"]) == {"__future__", "mixprec"}


@pytest.mark.parametrize("device_type", [*FAMILIES, "npu"])
def test_the_policy_imports_only_mixprec(device_type: str) -> None:
    # The hardware is read through mixprec.probes, which imports torch when asked.
    assert _imports(_files("npu", device_type)["mixprec_npu/policy.py"]) == {"__future__", "mixprec"}


def _code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            first = node.body[0]
            docstrings |= set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    skipped = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skipped:
            lines |= set(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


@pytest.mark.parametrize("device_type", [*FAMILIES, "npu"])
def test_plugin_and_policy_are_at_most_40_lines_of_code(device_type: str) -> None:
    generated = _files("npu", device_type)
    assert _code_lines(generated["mixprec_npu/__init__.py"]) + _code_lines(generated["mixprec_npu/policy.py"]) <= 40


def test_the_plugin_describes_the_backend(tmp_path: Path) -> None:
    names = scaffold(scaffold_names("gen", "npu", tmp_path / "gen"), mixprec.__version__)
    (backend,) = _load(names.directory / names.package / "__init__.py", names.package).mixprec_backends()
    assert (backend.name, backend.device_type, backend.precisions, backend.policy) == (
        "gen",
        "npu",
        PRECISIONS,
        "mixprec_gen.policy",
    )


def test_the_cpu_readme_says_every_check_runs_on_the_cpu_and_what_slow_means() -> None:
    readme = _files("npu", "cpu")["README.md"]
    assert "`mixprec check` and `pytest` run every check: none is skipped" in readme
    assert 'shows the precision "slow"' in readme
    assert "skipped with the reason" not in readme


def test_the_readme_for_another_device_type_says_its_checks_skip_where_no_device_is() -> None:
    readme = _files("npu", "npu")["README.md"]
    assert "every check is skipped with the reason (no `npu` device here), never passed" in readme


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """The policy modules generated for the CPU, CUDA and MPS, imported."""
    root = tmp_path_factory.mktemp("families")
    return {device_type: _policy(root / device_type, device_type) for device_type in FAMILIES}


CPU_FEATURES = st.builds(CPUFeatures, st.booleans(), st.booleans(), st.booleans(), st.booleans())


@given(CPU_FEATURES)
def test_on_any_cpu_the_generated_policy_answers_as_mixprec_cpu(
    generated: dict[str, ModuleType], features: CPUFeatures
) -> None:
    from mixprec_cpu.policy import decide

    for precision in PRECISIONS:
        ours, theirs = (
            generated["cpu"].decide(precision, Device("cpu"), features),
            decide(precision, Device("cpu"), features),
        )
        assert ours.status == theirs.status
        assert ours.reason  # every answer says why


def test_a_cpu_without_native_bf16_or_fp16_is_slow_saying_it_emulates_them(generated: dict[str, ModuleType]) -> None:
    avx2_only = CPUFeatures(avx512_bf16=False, amx_tile=False, avx512_fp16=False, amx_fp16=False)
    found = generated["cpu"].decide("bf16-mixed", Device("cpu"), avx2_only)
    assert found == Availability.slow("the CPU emulates bfloat16, which is slower than fp32 here; use '32-true'")


def test_a_cpu_with_native_bf16_is_available_naming_the_feature(generated: dict[str, ModuleType]) -> None:
    cooper_lake = CPUFeatures(avx512_bf16=True, amx_tile=False, avx512_fp16=False, amx_fp16=False)
    found = generated["cpu"].decide("bf16-mixed", Device("cpu"), cooper_lake)
    assert found == Availability.available("the CPU computes bfloat16 natively (AVX512-BF16)")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_on_this_cpu_the_generated_policy_answers_as_mixprec_cpu(
    generated: dict[str, ModuleType], precision: str
) -> None:
    from mixprec_cpu import policy

    assert (
        generated["cpu"].availability(precision, Device("cpu")).status
        == policy.availability(precision, Device("cpu")).status
    )
    assert generated["cpu"].device_count() == 1


def test_a_cpu_index_past_the_first_is_unavailable(generated: dict[str, ModuleType]) -> None:
    assert generated["cpu"].availability("bf16-mixed", Device("cpu", 1)) == Availability.unavailable(
        "there is one CPU device; cpu:1 does not exist, use 'cpu'"
    )


CAPABILITIES = st.one_of(st.none(), st.tuples(st.integers(3, 12), st.integers(0, 9)))


@given(st.lists(CAPABILITIES, max_size=3), st.one_of(st.none(), st.integers(0, 3)))
def test_on_any_gpus_the_generated_cuda_policy_answers_as_mixprec_cuda(
    generated: dict[str, ModuleType], capabilities: list[tuple[int, int] | None], index: int | None
) -> None:
    from mixprec_cuda.policy import decide

    rocm = any(c is None for c in capabilities)
    devices = tuple(GPU("GPU", None if rocm else c) for c in capabilities)
    found = CUDAProbe("2.13.0", None if rocm else "12.8", "6.4" if rocm else None, devices=devices)
    for precision in PRECISIONS:
        ours, theirs = (
            generated["cuda"].decide(precision, Device("cuda", index), found),
            decide(precision, Device("cuda", index), found),
        )
        assert ours.status == theirs.status


def test_on_a_cpu_build_of_torch_the_generated_cuda_policy_counts_no_gpu_and_says_why(
    generated: dict[str, ModuleType],
) -> None:
    if mixprec.probes.cuda().runtime is not None:
        pytest.skip("torch here is built with CUDA")
    assert generated["cuda"].device_count() == 0
    assert "was built without CUDA" in generated["cuda"].availability("bf16-mixed", Device("cuda")).reason


MPS_PROBES = st.builds(
    MPSProbe,
    st.tuples(st.integers(2, 3), st.integers(0, 10)),
    st.one_of(st.none(), st.tuples(st.integers(12, 16), st.integers(0, 6))),
    st.booleans(),
    st.booleans(),
)


@given(MPS_PROBES)
def test_on_any_mac_the_generated_mps_policy_answers_as_mixprec_mps(
    generated: dict[str, ModuleType], found: MPSProbe
) -> None:
    from mixprec_mps.policy import decide

    for precision in PRECISIONS:
        assert (
            generated["mps"].decide(precision, Device("mps"), found).status
            == decide(precision, Device("mps"), found).status
        )


@pytest.mark.parametrize("device_type", ["xpu", "no_such_type"])
def test_a_device_type_torch_has_none_of_is_counted_0_and_unavailable(device_type: str, tmp_path: Path) -> None:
    policy = _policy(tmp_path, device_type)
    assert policy.device_count() == 0
    assert policy.availability("bf16-mixed", Device(device_type)) == Availability.unavailable(
        f"no {device_type} here: torch sees 0 {device_type} device(s)"
    )


@pytest.mark.parametrize(("precision", "scaled"), [("bf16-mixed", False), ("16-mixed", True)])
def test_the_policy_builds_the_standard_precision(
    precision: str, scaled: bool, generated: dict[str, ModuleType]
) -> None:
    built = generated["cpu"].create(Request(precision, Device("cpu"), "gen"))
    assert (built.precision, built.device, built.scaler is not None) == (precision, "cpu", scaled)


# --- writing --------------------------------------------------------------------------------------


def test_a_directory_that_holds_anything_is_never_written_into(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    ran = run_cli(["new", "npu", "--device", "npu", "--dir", str(tmp_path)])
    assert ran.code == 2
    assert "exists and is not empty, and mixprec new never overwrites anything" in ran.err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_empty_directory_is_written_into(tmp_path: Path) -> None:
    assert run_cli(["new", "npu", "--device", "npu", "--dir", str(tmp_path)]).code == 0
    assert (tmp_path / "mixprec_npu" / "policy.py").is_file()


def test_a_file_in_place_of_the_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    ran = run_cli(["new", "npu", "--device", "npu", "--dir", str(tmp_path / "x")])
    assert (ran.code, "is a file: pass --dir with a new or empty directory" in ran.err) == (2, True)


def test_a_directory_that_cannot_be_made_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    ran = run_cli(["new", "npu", "--device", "npu", "--dir", str(tmp_path / "x" / "y")])
    assert ran.code == 2
    assert ran.err.startswith(f"mixprec: error: Cannot write the backend into {tmp_path / 'x' / 'y'}: ")


@pytest.mark.parametrize("name", ["cpu", "core"])
def test_the_name_of_an_installed_backend_is_refused(name: str, tmp_path: Path) -> None:
    ran = run_cli(["new", name, "--device", "cpu", "--dir", str(tmp_path / "d")])
    assert ran.code == 2
    assert f"A backend named {name!r} is installed already" in ran.err
    assert not (tmp_path / "d").exists()


def test_new_prints_the_files_and_the_next_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran = run_cli(["new", "acme-npu", "--device", "npu"])
    assert ran.code == 0, ran.err
    where = f".{os.sep}mixprec-acme-npu"
    assert f"  {os.path.join(where, 'mixprec_acme_npu', 'policy.py')}\n" in ran.out
    assert ran.out.endswith(f"  pip install -e {where}\n  mixprec check acme_npu\n  pytest {where}{os.sep}tests\n")


def test_new_json_names_what_it_wrote(tmp_path: Path) -> None:
    ran = run_cli(["new", "npu", "--device", "npu", "--dir", str(tmp_path / "d"), "--json"])
    payload = json.loads(ran.out)
    assert (payload["backend"], payload["distribution"], payload["directory"]) == (
        "npu",
        "mixprec-npu",
        str((tmp_path / "d").resolve()),
    )
    assert all((tmp_path / "d" / f).is_file() for f in payload["files"])


@pytest.mark.slow
def test_new_imports_neither_torch_nor_lightning(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom mixprec import cli\n"
        f"assert cli.main(['new', 'npu', '--device', 'npu', '--dir', {str(tmp_path / 'd')!r}]) == 0\n"
        "print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "[]", done.stderr


# --- the generated code, checked by the tools it names, and installed -------------------------------


def _tool(*argv: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("name", "device_type"), [("npu", "cpu"), ("npu", "cuda"), ("npu", "mps"), (LONGEST, LONGEST)])
def test_the_generated_code_is_ruff_clean(name: str, device_type: str, tmp_path: Path) -> None:
    written = scaffold(scaffold_names(name, device_type, tmp_path / "d"), mixprec.__version__)
    _tool("ruff", "check", ".", cwd=written.directory)
    _tool("ruff", "format", "--check", ".", cwd=written.directory)


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for every generated package: torch's and lightning's stubs are read once, not per package
    (mypy rechecks what changed, the generated modules, by their content)."""
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.mark.slow
@pytest.mark.parametrize("device_type", [*FAMILIES, "npu"])
def test_the_generated_code_is_mypy_clean(device_type: str, tmp_path: Path, mypy_cache: Path) -> None:
    written = scaffold(scaffold_names("npu", device_type, tmp_path / "d"), mixprec.__version__)
    _tool("mypy", "--cache-dir", str(mypy_cache), cwd=written.directory)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Scaffold], dict[str, str]]:
    """Backends for "cpu" (present) and "xpu" (absent here) generated, pip-installed into a throwaway target.

    Returns the scaffolds by device type and the environment whose PYTHONPATH is that target.
    """
    root = tmp_path_factory.mktemp("scaffold")
    generated = {
        device_type: scaffold(scaffold_names(f"gen_{device_type}", device_type, root / device_type), "0.1.0")
        for device_type in ("cpu", "xpu")
    }
    target = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target"]
    done = subprocess.run(
        [*pip, str(target), *(str(s.directory) for s in generated.values())], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPREC_")}
    env["PYTHONPATH"] = str(target)
    return generated, env


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True)


def _check(name: str, env: dict[str, str]) -> dict[str, Any]:
    done = _run(["-m", "mixprec", "check", name, "--json"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.slow
def test_installed_where_its_device_is_present_it_passes_mixprec_check(
    installed: tuple[dict[str, Scaffold], dict[str, str]],
) -> None:
    generated, env = installed
    report = _check(generated["cpu"].backend, env)
    assert (report["distribution"], report["ok"], report["failed"], report["skipped"]) == (
        "mixprec-gen-cpu",
        True,
        0,
        0,
    )
    assert report["passed"] > 0
    assert set(report["precisions"]) == set(PRECISIONS)


@pytest.mark.slow
def test_installed_where_its_device_is_absent_it_skips_every_check_saying_why(
    installed: tuple[dict[str, Scaffold], dict[str, str]],
) -> None:
    generated, env = installed
    report = _check(generated["xpu"].backend, env)
    assert (report["ok"], report["failed"]) == (True, 0)
    # That each precision has a contract is a fact about the backend's description, checked on any machine.
    ran = {r["check"] for r in report["results"] if r["outcome"] == "passed"}
    assert ran <= {"contract_declared"}
    skipped = [r["detail"] for r in report["results"] if r["outcome"] == "skipped"]
    assert len(skipped) > 20
    assert all("xpu" in detail for detail in skipped)


@pytest.mark.slow
def test_installed_its_plugin_imports_neither_torch_nor_lightning(
    installed: tuple[dict[str, Scaffold], dict[str, str]],
) -> None:
    generated, env = installed
    code = f"import sys, {generated['cpu'].package}; print(sorted({{'torch', 'lightning'}} & set(sys.modules)))"
    done = _run(["-c", code], env)
    assert done.stdout == "[]\n", done.stderr


@pytest.mark.slow
def test_installed_its_own_conformance_tests_pass(installed: tuple[dict[str, Scaffold], dict[str, str]]) -> None:
    generated, env = installed
    done = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], env, cwd=generated["cpu"].directory)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout.splitlines()[-1]

"""Generated command lines for every command: argparse's exit 2, or a clean exit, never a traceback.

Each command line runs in this process through ``mixprec.cli.main``. The promise: argparse's
``SystemExit(2)`` for a usage error (0 for ``--help``), or a status with, for 2, one
``mixprec: error: ...`` line; any other exception fails the test. ``check`` is given no backend
and precision it could run, and ``demo`` and ``bench`` always get at least one argument that is
refused before anything trains, so the suite stays fast. Examples are derandomised, so CI runs
the same ones every time.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixprec
from mixprec import cli

PROPERTIES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

PRECISIONS = sorted({*mixprec.STANDARD_CONTRACTS, *mixprec.ALIASES, "auto", "fp8-mixed"})
_DEVICE = re.compile(r"[a-z_][a-z0-9_]*(:[0-9]+)?")

words = st.text(max_size=12)
#: Device strings: well formed (present, absent, unknown types), malformed, and with absurd indices.
devices = st.one_of(
    words,
    st.sampled_from(["cpu", "cpu:0", "cpu:1", "cuda", "cuda:7", "xpu", "mps", "meta", "*", "CPU", " cpu", "cpu:"]),
    st.from_regex(r"[a-z_][a-z0-9_]{0,6}(:[0-9]{1,6})?", fullmatch=True),
    st.text(alphabet="0123456789", min_size=1, max_size=6000).map(lambda n: f"cpu:{n}"),
)
precisions = st.one_of(words, st.sampled_from(PRECISIONS))


def _installed() -> list[str]:
    return sorted({r.backend for r in mixprec.available() if r.precision})


def _refused_device() -> st.SearchStrategy[str]:
    """Devices that nothing can train on: malformed, of a type nobody serves, or absent here."""
    return st.one_of(
        words.filter(lambda t: not _DEVICE.fullmatch(t)),
        st.from_regex(r"nosuch[a-z]{0,4}", fullmatch=True),
        st.integers(min_value=1, max_value=10**30).map(lambda n: f"cpu:{n}"),
    )


def _optional(flag: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), values.map(lambda v: [flag, v]))


def _switch(flag: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from([[], [flag]])


def _paths(directory: Path) -> st.SearchStrategy[str]:
    """An output path in ``directory``: writable, in a missing directory, a directory, or a generated name.

    A generated name has no "/", so that it can never name a file outside ``directory``.
    """
    return st.one_of(
        st.sampled_from([str(directory / "out"), str(directory / "no" / "such" / "out"), str(directory)]),
        words.map(lambda w: str(directory / w.replace("/", "_"))),
    )


def _not_an_int(word: str) -> bool:
    try:
        int(word)  # which takes " 1_0 ", "+3" and digits of every script
    except ValueError:
        return True
    return False


def _run(argv: Sequence[str]) -> None:
    """Run ``mixprec ARGV`` and hold its outcome to the promise; any exception but SystemExit propagates."""
    out, err = io.StringIO(), io.StringIO()
    exited: object = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(argv))
    except SystemExit as exit_:
        exited = exit_.code
    if exited == 0:  # --help or --version, which a generated word can spell
        assert out.getvalue(), argv
        return
    if exited is not None:
        assert exited == 2, argv
        assert "error:" in err.getvalue(), argv
        return
    assert "Traceback" not in err.getvalue(), argv
    if code == cli.EXIT_ERROR:
        assert err.getvalue().startswith("mixprec: error: "), (argv, err.getvalue())
    else:
        assert code in (0, cli.EXIT_FAILED), (argv, code, err.getvalue())


#: The commands that train, run a suite or write a directory: random words never name them.
_BUSY = ("check", "demo", "bench", "new")


@PROPERTIES
@given(st.lists(st.one_of(words, st.sampled_from(["list", "explain", "--json", "--device", "--help"])), max_size=5))
def test_any_words_after_mixprec(argv: list[str]) -> None:
    _run([word for word in argv if word not in _BUSY])


@PROPERTIES
@given(_optional("--device", devices), _switch("--json"), st.data())
def test_list(device: list[str], json_: list[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _run(["list", *device, *json_, *data.draw(_optional("-o", _paths(Path(directory))))])


@PROPERTIES
@given(
    st.one_of(st.just([]), precisions.map(lambda p: [p])),
    _optional("--device", devices),
    _optional("--backend", st.one_of(words, st.sampled_from(["core", "cpu", "cuda", "nope"]))),
    _switch("--json"),
)
def test_explain(precision: list[str], device: list[str], backend: list[str], json_: list[str]) -> None:
    _run(["explain", *precision, *device, *backend, *json_])


@PROPERTIES
@given(st.data())
def test_check_refused_before_any_check_runs(data: st.DataObject) -> None:
    installed = _installed()
    unknown = words.filter(lambda w: w not in installed)
    # An installed backend with a precision it does not offer, or a backend that is not installed.
    backend, precision = data.draw(
        st.one_of(
            st.tuples(st.sampled_from(installed), words.filter(lambda w: w.strip().lower() not in PRECISIONS)),
            st.tuples(unknown, st.one_of(st.none(), precisions)),
        )
    )
    with tempfile.TemporaryDirectory() as directory:
        argv = ["check", backend, *data.draw(_optional("--device", devices))]
        argv += [] if precision is None else ["--precision", precision]
        argv += data.draw(_switch("--json")) + data.draw(_optional("--junit-xml", _paths(Path(directory))))
        _run(argv)


@PROPERTIES
@given(
    st.one_of(words, st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,40}", fullmatch=True)),
    st.one_of(words, st.sampled_from(["cpu", "xpu", "npu", "cuda:0", "CUDA", "*"])),
    _switch("--json"),
    st.booleans(),
)
def test_new(name: str, device_type: str, json_: list[str], occupied: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "backend"
        if occupied:
            target.mkdir()
            (target / "kept").write_text("")
        _run(["new", name, "--device", device_type, "--dir", str(target), *json_])
        if occupied:
            assert [p.name for p in target.iterdir()] == ["kept"]


def _refusal(directory: Path, sizes: Sequence[str]) -> st.SearchStrategy[list[str]]:
    """One argument that demo or bench refuses before it trains anything."""
    return st.one_of(
        _refused_device().map(lambda d: ["--device", d]),
        st.sampled_from([str(directory / "no" / "out"), str(directory)]).map(lambda p: ["-o", p]),
        st.tuples(st.sampled_from(sizes), words.filter(_not_an_int)).map(list),
        st.just(["--no-such-option"]),
    )


@PROPERTIES
@given(st.data())
def test_demo_refused_before_it_trains(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        refusal = data.draw(
            st.one_of(
                _refusal(Path(directory), ["--steps"]),
                st.integers(max_value=2).map(lambda n: ["--steps", str(n)]),
            )
        )
        others = data.draw(_optional("--steps", st.integers(min_value=3, max_value=10**6).map(str)))
        _run(["demo", *others, *data.draw(_switch("--json")), *refusal])


@PROPERTIES
@given(st.data())
def test_bench_refused_before_it_measures(data: st.DataObject) -> None:
    sizes = ["--rounds", "--dim", "--seq", "--batch"]
    with tempfile.TemporaryDirectory() as directory:
        refusal = data.draw(
            st.one_of(
                _refusal(Path(directory), sizes),
                st.tuples(st.sampled_from(sizes), st.integers(max_value=0).map(str)).map(list),
                st.text(alphabet="0123456789", min_size=7, max_size=500).map(lambda n: ["--dim", f"9{n}"]),
                st.just(["--plot", str(Path(directory) / "no" / "plot.png")]),
            )
        )
        others = data.draw(_optional("--batch", st.integers(min_value=1, max_value=64).map(str)))
        _run(["bench", *others, *data.draw(_switch("--json")), *refusal])

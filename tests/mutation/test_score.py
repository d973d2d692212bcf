"""The score counts killed, surviving and equivalent mutants as it says, and the equivalents file is well formed."""

from __future__ import annotations

from dataclasses import replace

from tests.mutation.runner import Equivalent, Result, enumerate_mutants, load_equivalents, sample, score, survivors
from tests.mutation.world import TARGETS, Mutant

KILLED = Result("m:a:0", "mod", "fabric", "drop_statement", "C.f", 3, "x = 1", "pass", "killed", "32-true:check")
SURVIVED = replace(KILLED, id="m:a:1", outcome="survived", killed_by="")
UNREACHED = replace(KILLED, id="m:a:2", function="C.g", outcome="unreached", killed_by="")
TIMEOUT = replace(KILLED, id="m:a:3", outcome="timeout", killed_by="timeout")


def test_timeouts_count_as_killed_and_unreached_as_surviving() -> None:
    s = score([KILLED, SURVIVED, UNREACHED, TIMEOUT], [])["all"]["all"]
    assert (s.killed, s.survived, s.equivalent) == (2, 2, 0)
    assert s.rate == 0.5
    assert s.survivors == ["m:a:1", "m:a:2"]


def test_an_equivalent_mutant_leaves_the_denominator() -> None:
    exact = Equivalent("mod", "C.f", "why", "drop_statement", "x = 1", "pass")
    s = score([KILLED, SURVIVED], [exact])["all"]["all"]
    assert (s.killed, s.survived, s.equivalent, s.rate) == (1, 0, 1, 1.0)


def test_a_recorded_equivalent_that_is_killed_is_listed() -> None:
    exact = Equivalent("mod", "C.f", "why", "drop_statement", "x = 1", "pass")
    assert score([KILLED], [exact])["all"]["all"].equivalent_killed == ["m:a:0"]


def test_a_function_entry_covers_its_survivors_and_flags_no_kill() -> None:
    whole = Equivalent("mod", "C.g", "no object runs it")
    s = score([UNREACHED, replace(UNREACHED, id="m:a:4", outcome="killed")], [whole])["all"]["all"]
    assert (s.killed, s.equivalent, s.equivalent_killed) == (1, 1, [])
    assert list(survivors([UNREACHED], [whole])) == []


def test_scores_are_kept_per_module_and_per_target() -> None:
    trainer = replace(SURVIVED, id="t:a:0", module="other", target="trainer")
    scores = score([KILLED, trainer], [])
    assert scores["target"]["fabric"].rate == 1.0
    assert scores["target"]["trainer"].rate == 0.0
    assert set(scores["module"]) == {"mod", "other"}


def test_every_recorded_equivalent_names_a_mutated_module_and_says_why() -> None:
    equivalents = load_equivalents()
    assert equivalents
    assert all(e.module in TARGETS and e.reason.strip() for e in equivalents)
    assert all((e.before is None) == (e.operator is None) == (e.after is None) for e in equivalents)


def test_the_sample_is_fixed_and_takes_every_module() -> None:
    mutants = enumerate_mutants()
    chosen = sample(mutants, 7)
    assert chosen == sample(enumerate_mutants(), 7)
    assert {m.module for m in chosen} == set(TARGETS)
    first = [m for m in mutants if m.module == chosen[0].module]
    assert chosen[:3] == [first[0], first[7], first[14]]
    assert isinstance(chosen[0], Mutant)

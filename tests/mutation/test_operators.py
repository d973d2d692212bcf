"""Each mutation operator makes the change it names, at the sites it names, and nowhere else."""

from __future__ import annotations

import ast
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.mutation.operators import DEVICES, DTYPES, PRECISIONS, mutate, operator_names, sites

SOURCE = textwrap.dedent(
    '''
    """A module docstring: never mutated."""
    import torch

    LIMIT = 3  # module level: never mutated


    class Plugin:
        """A class docstring."""

        precision: str = "16-mixed"

        def __init__(self, precision: str = "bf16-mixed", device: str = "cuda") -> None:
            """A method docstring."""
            self.precision = precision
            self.device = device

        def dtype(self) -> torch.dtype:
            return torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16

        def step(self, optimizer, scaler=None):
            if scaler is not None and not optimizer.skip:
                scaler.step(optimizer, closure=None)
            with torch.no_grad():
                optimizer.counter += 1
            return self.scale(optimizer, factor=2.0)
    '''
)


def _changed(operator: str, index: int = 0) -> str:
    tree, _ = mutate(SOURCE, operator, index)
    return ast.unparse(tree)


def _original() -> str:
    return ast.unparse(ast.parse(SOURCE))


def _only_difference(operator: str, index: int = 0) -> tuple[str, str]:
    """The one line that differs between the source and the mutant: (before, after)."""
    before, after = _original().splitlines(), _changed(operator, index).splitlines()
    removed = [line for line in before if line not in after]
    added = [line for line in after if line not in before]
    return "\n".join(removed).strip(), "\n".join(added).strip()


def test_negate_condition_tests_the_opposite() -> None:
    before, after = _only_difference("negate_condition", 1)
    assert before == "if scaler is not None and (not optimizer.skip):"
    assert after == "if not (scaler is not None and (not optimizer.skip)):"


def test_negate_condition_of_a_conditional_expression() -> None:
    assert "return torch.bfloat16 if not self.precision == 'bf16-mixed' else torch.float16" in _changed(
        "negate_condition", 0
    )


def test_swap_comparison_swaps_the_operator() -> None:
    assert "if self.precision != 'bf16-mixed'" in _changed("swap_comparison", 0).replace("torch.bfloat16 if ", "if ")
    assert "if scaler is None and (not optimizer.skip)" in _changed("swap_comparison", 1)


def test_swap_boolean_swaps_and_for_or() -> None:
    assert "if scaler is not None or not optimizer.skip:" in _changed("swap_boolean")


def test_remove_not_drops_the_negation() -> None:
    assert "if scaler is not None and optimizer.skip:" in _changed("remove_not")


def test_drop_statement_replaces_a_statement_by_pass() -> None:
    before, _ = _only_difference("drop_statement", 0)
    assert before == "self.precision = precision"
    assert _changed("drop_statement", 0).count("pass") == 1


def test_drop_statement_never_drops_docstrings_or_returns() -> None:
    tree = ast.parse(SOURCE)
    dropped = [ast.unparse(s.node) for s in sites(tree, "drop_statement")]
    assert not any('"""' in d or d.startswith(("'A ", "return")) for d in dropped)
    assert "optimizer.counter += 1" in dropped


def test_call_to_argument_replaces_a_call_by_its_first_argument() -> None:
    assert "return optimizer" in _changed("call_to_argument", 0)


def test_drop_keyword_drops_one_keyword_argument_each() -> None:
    calls = {_only_difference("drop_keyword", i)[1] for i in range(len(sites(ast.parse(SOURCE), "drop_keyword")))}
    assert "scaler.step(optimizer)" in calls
    assert "return self.scale(optimizer)" in calls


def test_swap_constant_changes_numbers_and_bools_only_inside_functions() -> None:
    changed = [_only_difference("swap_constant", i)[1] for i in range(len(sites(ast.parse(SOURCE), "swap_constant")))]
    assert changed == ["optimizer.counter += 2", "return self.scale(optimizer, factor=4.0)"]
    assert "LIMIT = 3" in _changed("swap_constant", 0)


def test_swap_precision_swaps_precision_strings_but_not_defaults_or_class_attributes() -> None:
    assert len(sites(ast.parse(SOURCE), "swap_precision")) == 1
    assert "self.precision == '16-mixed'" in _changed("swap_precision")


def test_swap_device_has_no_site_in_a_signature() -> None:
    assert sites(ast.parse(SOURCE), "swap_device") == []


def test_swap_dtype_swaps_torch_dtypes() -> None:
    assert "return torch.float16 if self.precision == 'bf16-mixed' else torch.float16" in _changed("swap_dtype", 0)
    assert "return torch.bfloat16 if self.precision == 'bf16-mixed' else torch.bfloat16" in _changed("swap_dtype", 1)


def test_return_none_returns_none() -> None:
    before, after = _only_difference("return_none", 1)
    assert before == "return self.scale(optimizer, factor=2.0)"
    assert after == "return"


def test_return_early_returns_before_the_first_statement_after_the_docstring() -> None:
    tree, change = mutate(SOURCE, "return_early", 0)
    init = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert isinstance(init.body[0], ast.Expr)  # the docstring stays first
    assert isinstance(init.body[1], ast.Return)
    assert change.function == "Plugin.__init__"


def test_remove_with_keeps_the_body_without_the_context() -> None:
    changed = _changed("remove_with")
    assert "torch.no_grad" not in changed
    assert "optimizer.counter += 1" in changed


def test_a_change_names_the_function_and_line() -> None:
    _, change = mutate(SOURCE, "drop_statement", 4)
    assert change.function == "Plugin.step"
    assert change.before.startswith("with torch.no_grad():")
    assert change.after == "pass"
    assert SOURCE.splitlines()[change.line - 1].strip() == "with torch.no_grad():"


def test_an_index_past_the_sites_is_an_index_error() -> None:
    with pytest.raises(IndexError, match="remove_not has 1 sites"):
        mutate(SOURCE, "remove_not", 1)


def test_an_unknown_operator_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no mutation operator is named 'flip'"):
        mutate(SOURCE, "flip", 0)


@given(st.sampled_from(operator_names()), st.integers(min_value=0, max_value=20))
def test_every_mutant_compiles_and_differs_from_the_source(operator: str, index: int) -> None:
    count = len(sites(ast.parse(SOURCE), operator))
    if index >= count:
        return
    tree, change = mutate(SOURCE, operator, index)
    compile(tree, "<mutant>", "exec")
    assert ast.unparse(tree) != _original()
    assert change.before != change.after


@pytest.mark.parametrize(("table", "pairs"), [(PRECISIONS, 6), (DEVICES, 3), (DTYPES, 7)])
def test_every_swap_changes_the_value(table: dict[str, str], pairs: int) -> None:
    assert len(table) == pairs
    assert all(key != value for key, value in table.items())

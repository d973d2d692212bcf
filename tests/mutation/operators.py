"""Mutation operators: each finds its sites in a module's source and changes one of them.

An operator only touches code inside function bodies (methods included), never docstrings,
annotations, imports or module-level statements: a mutant must change what an object *does*. The
sites of a source are found in one fixed order (the order of the code), so ``(operator, index)``
names the same mutant on every run against the same source.

Every operator makes exactly one change per site; :func:`mutate` returns the mutated module tree and
what changed, as source text before and after.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["OPERATORS", "Change", "Operator", "Site", "mutate", "sites"]

#: Precision strings swapped for their neighbour: the dtype of the same family, or the other width.
PRECISIONS = {
    "16-mixed": "bf16-mixed",
    "bf16-mixed": "16-mixed",
    "16-true": "bf16-true",
    "bf16-true": "16-true",
    "32-true": "64-true",
    "64-true": "32-true",
}
#: Device strings swapped for another device type.
DEVICES = {"cuda": "cpu", "cpu": "cuda", "mps": "cpu"}
#: ``torch.<dtype>`` attributes swapped for another floating dtype of the same width or the wider one.
DTYPES = {
    "float16": "bfloat16",
    "half": "bfloat16",
    "bfloat16": "float16",
    "float32": "float64",
    "float": "float64",
    "float64": "float32",
    "double": "float32",
}
_COMPARISONS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}


@dataclass(frozen=True)
class Site:
    """Where a node sits: its parent, the parent's field holding it, and its index in that field (None: no list)."""

    node: ast.AST
    parent: ast.AST
    field: str
    index: int | None
    #: The qualified name of the function the node is in, e.g. ``MixedPrecision.backward``.
    function: str


Replacement = ast.AST | list[ast.stmt]


@dataclass(frozen=True)
class Operator:
    """A mutation operator: which nodes it changes (``applies``) and the node or statements it puts in their place."""

    name: str
    description: str
    applies: Callable[[Site], bool]
    replace: Callable[[Site], Replacement]


@dataclass(frozen=True)
class Change:
    """What one mutant changed: its function, its line, and the smallest statement around it, before and after."""

    operator: str
    function: str
    line: int
    before: str
    after: str
    #: The first line the mutant changes that runs when the code runs (a function's: its first statement's).
    first_line: int


# --- walking a module's function bodies ----------------------------------------------------------------------------


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _children(node: ast.AST) -> Iterator[tuple[str, int | None, ast.AST]]:
    for name, value in ast.iter_fields(node):
        if name in ("annotation", "returns", "decorator_list", "type_comment", "args") and isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.arg, ast.AnnAssign)
        ):
            continue  # annotations and signatures are not behaviour
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.AST):
                    yield name, i, item
        elif isinstance(value, ast.AST):
            yield name, None, value


def _walk(node: ast.AST, scope: str, in_function: bool) -> Iterator[Site]:
    for name, index, child in _children(node):
        if isinstance(child, ast.ClassDef):
            yield from _walk(child, f"{scope}{child.name}.", in_function)
            continue
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            qualname = f"{scope}{child.name}"
            yield Site(child, node, name, index, qualname)
            yield from _walk(child, f"{qualname}.", True)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(child, ast.stmt) and _is_docstring(child) and index == 0:
            continue
        if in_function:
            yield Site(child, node, name, index, scope.rstrip("."))
        yield from _walk(child, scope, in_function)


def _function_sites(tree: ast.Module) -> Iterator[Site]:
    """Every node inside a function body, in the order of the code, each with where it sits."""
    return _walk(tree, "", False)


# --- the operators --------------------------------------------------------------------------------------------------


def _is_function(site: Site) -> bool:
    return isinstance(site.node, (ast.FunctionDef, ast.AsyncFunctionDef))


def _in_body(site: Site) -> bool:
    """A statement of a function's (or a compound statement's) body, not the function itself."""
    return isinstance(site.node, ast.stmt) and not _is_function(site) and site.index is not None


def _negate_condition_applies(site: Site) -> bool:
    return isinstance(site.node, (ast.If, ast.While, ast.IfExp))


def _negate_condition(site: Site) -> ast.AST:
    node = copy.copy(site.node)
    node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)  # type: ignore[attr-defined]
    return node


def _swap_comparison_applies(site: Site) -> bool:
    return isinstance(site.node, ast.Compare) and type(site.node.ops[0]) in _COMPARISONS


def _swap_comparison(site: Site) -> ast.AST:
    node = copy.copy(site.node)
    assert isinstance(node, ast.Compare)
    node.ops = [_COMPARISONS[type(node.ops[0])](), *node.ops[1:]]
    return node


def _swap_boolean(site: Site) -> ast.AST:
    node = copy.copy(site.node)
    assert isinstance(node, ast.BoolOp)
    node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    return node


def _drop_statement_applies(site: Site) -> bool:
    return _in_body(site) and not isinstance(site.node, (ast.Pass, ast.Return, ast.Global, ast.Nonlocal, ast.ClassDef))


def _pass(site: Site) -> list[ast.stmt]:
    return [ast.Pass()]


def _call_to_argument_applies(site: Site) -> bool:
    node = site.node
    return (
        isinstance(node, ast.Call)
        and bool(node.args)
        and not isinstance(node.args[0], ast.Starred)
        and not isinstance(site.parent, ast.Expr)  # a call statement: drop_statement drops it
    )


def _call_to_argument(site: Site) -> ast.AST:
    assert isinstance(site.node, ast.Call)
    return site.node.args[0]


def _drop_keyword_applies(site: Site) -> bool:
    return isinstance(site.node, ast.Call) and any(k.arg is not None for k in site.node.keywords)


def _drop_keyword_variants(site: Site) -> int:
    assert isinstance(site.node, ast.Call)
    return sum(k.arg is not None for k in site.node.keywords)


def _constant_applies(site: Site) -> bool:
    node = site.node
    return isinstance(node, ast.Constant) and (
        isinstance(node.value, bool)
        or (isinstance(node.value, (int, float)) and not isinstance(site.parent, ast.Slice))
    )


def _swap_constant(site: Site) -> ast.AST:
    assert isinstance(site.node, ast.Constant)
    value = site.node.value
    if isinstance(value, bool):
        return ast.Constant(not value)
    if isinstance(value, float):
        return ast.Constant(1.0 if value == 0 else value * 2)
    assert isinstance(value, int)
    return ast.Constant(value + 1)


def _string_in(table: dict[str, str]) -> Callable[[Site], bool]:
    def applies(site: Site) -> bool:
        node = site.node
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in table
            and not isinstance(site.parent, ast.JoinedStr)
        )

    return applies


def _swap_string(table: dict[str, str]) -> Callable[[Site], ast.AST]:
    def replace(site: Site) -> ast.AST:
        assert isinstance(site.node, ast.Constant)
        return ast.Constant(table[str(site.node.value)])

    return replace


def _swap_dtype_applies(site: Site) -> bool:
    node = site.node
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "torch"
        and node.attr in DTYPES
    )


def _swap_dtype(site: Site) -> ast.AST:
    assert isinstance(site.node, ast.Attribute)
    return ast.Attribute(value=ast.Name("torch", ast.Load()), attr=DTYPES[site.node.attr], ctx=ast.Load())


def _return_none_applies(site: Site) -> bool:
    node = site.node
    return (
        isinstance(node, ast.Return)
        and node.value is not None
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
    )


def _return_none(site: Site) -> list[ast.stmt]:
    return [ast.Return(value=None)]


def _statements(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    """The body of ``function`` without its docstring."""
    return function.body[1:] if _is_docstring(function.body[0]) else function.body


def _return_early_applies(site: Site) -> bool:
    """A function that does something: not only a docstring, ``pass`` or ``return None``."""
    if not _is_function(site):
        return False
    assert isinstance(site.node, (ast.FunctionDef, ast.AsyncFunctionDef))
    body = _statements(site.node)
    return (
        bool(body)
        and not isinstance(body[0], ast.Pass)
        and not (isinstance(body[0], ast.Return) and (body[0].value is None or _is_none(body[0].value)))
    )


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _return_early(site: Site) -> ast.AST:
    node = copy.copy(site.node)
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    start = 1 if node.body and _is_docstring(node.body[0]) else 0
    node.body = [*node.body[:start], ast.Return(value=None), *node.body[start:]]
    return node


def _remove_with(site: Site) -> list[ast.stmt]:
    assert isinstance(site.node, (ast.With, ast.AsyncWith))
    return list(site.node.body)


def _remove_not_applies(site: Site) -> bool:
    return isinstance(site.node, ast.UnaryOp) and isinstance(site.node.op, ast.Not)


def _remove_not(site: Site) -> ast.AST:
    assert isinstance(site.node, ast.UnaryOp)
    return site.node.operand


#: Every operator, by name, in the order mutants are numbered.
OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator(
            "negate_condition",
            "an if/while/conditional expression tests the opposite",
            _negate_condition_applies,
            _negate_condition,
        ),
        Operator(
            "swap_comparison",
            "==/!=, </<=, >/>=, is/is not, in/not in swapped",
            _swap_comparison_applies,
            _swap_comparison,
        ),
        Operator("swap_boolean", "and/or swapped", lambda s: isinstance(s.node, ast.BoolOp), _swap_boolean),
        Operator("remove_not", "a `not` dropped", _remove_not_applies, _remove_not),
        Operator(
            "drop_statement",
            "a statement (a call, an assignment, a raise, a block) replaced by pass",
            _drop_statement_applies,
            _pass,
        ),
        Operator(
            "call_to_argument",
            "a call replaced by its first argument (f(x) -> x)",
            _call_to_argument_applies,
            _call_to_argument,
        ),
        Operator(
            "swap_constant", "a bool negated, an int plus one, a float doubled", _constant_applies, _swap_constant
        ),
        Operator(
            "swap_precision",
            "a precision string swapped ('16-mixed' <-> 'bf16-mixed', ...)",
            _string_in(PRECISIONS),
            _swap_string(PRECISIONS),
        ),
        Operator(
            "swap_device",
            "a device string swapped ('cuda' <-> 'cpu', 'mps' -> 'cpu')",
            _string_in(DEVICES),
            _swap_string(DEVICES),
        ),
        Operator(
            "swap_dtype",
            "a torch dtype swapped (float16 <-> bfloat16, float32 <-> float64)",
            _swap_dtype_applies,
            _swap_dtype,
        ),
        Operator("return_none", "return X replaced by return None", _return_none_applies, _return_none),
        Operator(
            "return_early", "a function returns None before its first statement", _return_early_applies, _return_early
        ),
        Operator(
            "remove_with",
            "a with statement replaced by its body",
            lambda s: isinstance(s.node, (ast.With, ast.AsyncWith)),
            _remove_with,
        ),
    )
}


def _drop_keyword(site: Site, which: int) -> ast.AST:
    node = copy.copy(site.node)
    assert isinstance(node, ast.Call)
    named = [k for k in node.keywords if k.arg is not None]
    node.keywords = [k for k in node.keywords if k is not named[which]]
    return node


def sites(tree: ast.Module, operator: str) -> list[Site]:
    """The sites ``operator`` mutates in ``tree``, in the order of the code.

    ``drop_keyword`` has one site per keyword argument: a call with two gives two mutants.
    """
    if operator == "drop_keyword":
        return [s for s in _function_sites(tree) if _drop_keyword_applies(s) for _ in range(_drop_keyword_variants(s))]
    applies = OPERATORS[operator].applies
    return [s for s in _function_sites(tree) if applies(s)]


def operator_names() -> tuple[str, ...]:
    """Every operator's name, ``drop_keyword`` (a keyword argument of a call dropped) included."""
    return (*OPERATORS, "drop_keyword")


def _replacement(tree: ast.Module, operator: str, index: int) -> tuple[Site, Replacement]:
    found = sites(tree, operator)
    if not 0 <= index < len(found):
        raise IndexError(f"{operator} has {len(found)} sites in this source, not an index {index}")
    site = found[index]
    if operator == "drop_keyword":
        which = sum(1 for s in found[:index] if s.node is site.node)
        return site, _drop_keyword(site, which)
    return site, OPERATORS[operator].replace(site)


def _statement_around(tree: ast.Module, node: ast.AST) -> ast.AST:
    """The innermost statement (or function) in ``tree`` that holds ``node``."""
    best: ast.AST = node
    for candidate in ast.walk(tree):
        if isinstance(candidate, ast.stmt) and any(n is node for n in ast.walk(candidate)):
            best = candidate  # ast.walk is breadth-first: later hits are deeper
    return best


def _shown(node: ast.AST) -> str:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return ast.unparse(ast.Module(body=node.body[:3], type_ignores=[]))
    return ast.unparse(node)


def _first_line(node: ast.AST) -> int:
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    return _statements(node)[0].lineno


def mutate(source: str, operator: str, index: int) -> tuple[ast.Module, Change]:
    """The module tree of ``source`` with site ``index`` of ``operator`` changed, and what changed.

    Raises:
        IndexError: ``source`` has no such site.
        KeyError: no operator has that name.
    """
    if operator not in operator_names():
        raise KeyError(f"no mutation operator is named {operator!r}; they are {', '.join(operator_names())}")
    tree = ast.parse(source)
    site, replacement = _replacement(tree, operator, index)
    around = _statement_around(tree, site.node)
    before = _shown(around)
    line = getattr(site.node, "lineno", getattr(around, "lineno", 0))
    first_line = _first_line(site.node) if _is_function(site) else getattr(around, "lineno", line)
    holder = getattr(site.parent, site.field)
    if site.index is None:
        setattr(site.parent, site.field, replacement)
    elif isinstance(replacement, list):
        holder[site.index : site.index + 1] = replacement or [ast.Pass()]
    else:
        holder[site.index] = replacement
    if around is site.node:
        around = replacement[0] if isinstance(replacement, list) and len(replacement) == 1 else replacement  # type: ignore[assignment]
        after = "\n".join(_shown(s) for s in replacement) if isinstance(replacement, list) else _shown(around)
    else:
        after = _shown(around)
    ast.fix_missing_locations(tree)
    return tree, Change(operator, site.function, line, before, after, first_line)

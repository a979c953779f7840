"""Generate each chapter's reference module from its solution notebook: every answer is written once.

``mechinterp-course build`` writes ``mechinterp_course/<chapter>/reference.py`` (``circuits`` for ``01_circuits``)
from ``solutions/<chapter>/<chapter>.ipynb``, in the spirit of d2l's ``#@save``. What is exported:

- every top-level function of a solution cell that is decorated with ``@exercise`` (without ``fallback=``: an open
  exercise such as the counterexample hunt has no reference), without its decorator and its ``### BEGIN/END
  SOLUTION`` lines, its docstring ending with "Defined in solutions/..., exercise N";
- every other top-level function of a solution cell (a helper the student writes for an exercise);
- ``EXERCISES``: the name each test cell checks (``check.<name>(...)``) -> the number of the exercise it belongs to,
  read from the nearest "Exercise N" heading above it (the checks' messages use it to name exercises);
- ``ANSWER_KEYS``: for every answer a solution cell writes out as a literal (``study_findings = {...}`` between the
  solution markers), its digests (``checking.answer_key``): the quiz checks compare digests, so the answers
  themselves are importable from nowhere.

The generated module imports exactly what the exported functions use, taken from the notebook's own import
statements; a function that uses any other notebook global (``model``, ``HALF_LEN``) is an error, because the
reference must not depend on the state of a notebook run. The sync test (``mechinterp-course build --check``)
guards these modules like the student notebooks.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
import symtable
import sys
import textwrap
from dataclasses import dataclass, field

import nbformat

from ..checking import answer_key

#: A heading that starts an exercise: "### Exercise 2.4 · ..." or "### Exercise 2.1–2.3 · ...".
EXERCISE_HEADING = re.compile(
    r"^#+\s.*?\bExercise\s+(?P<number>\d+(?:\.\d+)?(?:\s*[–-]\s*\d+(?:\.\d+)?)?)", re.MULTILINE
)
SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")
#: The module alias test cells call checks through (``check.get_attention_pattern(...)``).
CHECK_MODULE_ALIAS = "check"


class ExportError(ValueError):
    """The solution notebook cannot be exported as it is (the message says which function and why)."""


@dataclass
class Export:
    """What :func:`collect` found in a solution notebook."""

    functions: list[tuple[str, str]] = field(default_factory=list)  # (name, source), notebook order
    exercises: dict[str, str] = field(default_factory=dict)  # check name -> exercise number
    imports: dict[str, str] = field(default_factory=dict)  # bound name -> import statement
    answers: dict[str, object] = field(default_factory=dict)  # variable -> literal answer (solution cells)


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader") or {}


def _decorator_name(node: ast.expr) -> tuple[str | None, ast.Call | None]:
    target = node.func if isinstance(node, ast.Call) else node
    name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else None
    return name, node if isinstance(node, ast.Call) else None


def test_cell_calls(source: str) -> list[ast.Call]:
    """The ``check.<name>(...)`` calls of a test cell, in order. Raises :class:`ExportError` for anything else: the
    autograder runs test cells by reading them, so they must be plain calls (module ``instructor.judge``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ExportError(f"test cell does not parse: {error}") from None
    calls = []
    for statement in tree.body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == CHECK_MODULE_ALIAS
        ):
            raise ExportError(
                f"a test cell may only call {CHECK_MODULE_ALIAS}.<name>(...): line {statement.lineno} "
                f"is {ast.unparse(statement)!r}"
            )
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            if not isinstance(arg, (ast.Name, ast.Constant)):
                raise ExportError(f"test cell arguments must be names or constants: {ast.unparse(arg)!r}")
        calls.append(call)
    return calls


def collect(nb) -> Export:
    """Walk the notebook: imports, exported functions and the exercise numbers of test cells."""
    out = Export()
    number = None
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if cell.cell_type == "markdown":
            found = EXERCISE_HEADING.findall(cell.source)
            if found:
                number = re.sub(r"\s*[–-]\s*", "–", found[-1])
            continue
        if cell.cell_type != "code":
            continue
        source = cell.source
        if meta.get("grade") and not meta.get("solution"):
            for call in test_cell_calls(source):
                out.exercises.setdefault(call.func.attr, number or "")
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # IPython magics in a demo cell: nothing to export from it
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    bound = (alias.asname or alias.name).split(".")[0]
                    out.imports.setdefault(
                        bound,
                        ast.unparse(
                            ast.Import([alias])
                            if isinstance(node, ast.Import)
                            else ast.ImportFrom(node.module, [alias], node.level)
                        ),
                    )
        if not meta.get("solution"):
            continue
        lines = source.splitlines()
        out.answers.update(_literal_answers(tree, lines))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            decorators = [_decorator_name(d) for d in node.decorator_list]
            if any(
                name == "exercise" and call is not None and any(k.arg == "fallback" for k in call.keywords)
                for name, call in decorators
            ):
                continue  # an open exercise: nothing to compare with
            label = f"exercise {number}" if number else "a helper"
            out.functions.append((node.name, _function_source(node, lines, label)))
    return out


def _literal_answers(tree: ast.Module, lines: list[str]) -> dict[str, object]:
    """``name = <literal>`` statements between a cell's ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines."""
    inside = [i + 1 for i, line in enumerate(lines) if SOLUTION_MARKER.match(line)]
    regions = list(zip(inside[::2], inside[1::2]))
    answers = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        if not any(start < node.lineno < end for start, end in regions):
            continue
        try:
            answers[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            continue  # computed, not written out: checked by measuring, not against a key
    return answers


def _function_source(node: ast.FunctionDef, lines: list[str], label: str) -> str:
    """The function's source without decorators and solution markers, its docstring ending with where it comes
    from (the ``{label}`` is filled in by :func:`render`)."""
    body = lines[node.lineno - 1 : node.end_lineno]
    docstring = (
        node.body[0]
        if node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
        else None
    )
    indent = " " * node.body[0].col_offset
    provenance = f"Defined in {{notebook}}, {label}."
    if docstring is not None:
        last = docstring.end_lineno - node.lineno
        quote = body[last].rstrip()[-3:]
        body[last] = body[last].rstrip()[:-3] + f"\n\n{indent}{provenance}\n{indent}{quote}"
    else:
        first = node.body[0].lineno - node.lineno
        body.insert(first, f'{indent}"""{provenance}"""')
    return "\n".join(line for line in "\n".join(body).splitlines() if not SOLUTION_MARKER.match(line))


def _global_names(source: str) -> set[str]:
    """Names a function's code reads from its module (it and every function nested in it)."""
    names: set[str] = set()

    def visit(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            if symbol.is_global() and symbol.is_referenced():
                names.add(symbol.get_name())
        for child in table.get_children():
            visit(child)

    visit(symtable.symtable(source, "<exported>", "exec"))
    return names


def render(nb, notebook_path: str, chapter: str) -> str:
    """The text of ``mechinterp_course/<chapter>/reference.py`` for the solution notebook ``nb``."""
    found = collect(nb)
    names = [name for name, _ in found.functions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExportError(f"{notebook_path} defines {', '.join(duplicates)} more than once in solution cells")
    needed: dict[str, str] = {}
    for name, source in found.functions:
        for used in sorted(_global_names(source) - set(names) - set(dir(builtins))):
            if used not in found.imports:
                raise ExportError(
                    f"{name} in {notebook_path} uses the notebook global `{used}`: an exported "
                    f"function may use only its arguments, imports and other exported functions"
                )
            needed[used] = found.imports[used]
    number, _, short = chapter.partition("_")
    about = textwrap.fill(
        f"GENERATED by `mechinterp-course build` from {notebook_path}: do not edit this file. Edit the notebook and "
        "run `mechinterp-course build`. The checks compare students' functions with these; demo cells fall back to "
        "them until a student's function passes its check. A notebook's kernel cannot import this module while it "
        "is being graded.",
        width=116,  # the project's 120 columns, less the docstring's quotes
    )
    header = f'''"""Chapter {number} ({short})'s reference answers, generated from its solution notebook.

{about}
"""

from __future__ import annotations
'''
    parts = [header]
    groups: list[list[str]] = [[], [], []]  # standard library, third party, the course (isort's order)
    for statement in _merged(set(needed.values())):
        root = statement.split()[1].split(".")[0]
        groups[0 if root in sys.stdlib_module_names else 2 if root == "mechinterp_course" else 1].append(statement)
    blocks = ["\n".join(group) for group in groups if group]
    if blocks:
        parts.append("\n\n".join(blocks) + "\n")
    exercises = "".join(f"\n    {_quoted(name)}: {_quoted(number)}," for name, number in found.exercises.items())
    parts.append(
        "#: The name each test cell checks -> the number of its exercise in the notebook.\n"
        f"EXERCISES: dict[str, str] = {{{exercises}\n}}\n"
    )
    keys = {variable: answer_key(value, variable) for variable, value in found.answers.items()}
    key_lines = "".join(f"\n    {_quoted(variable)}: {_literal(key)}," for variable, key in keys.items())
    parts.append(
        "#: Digests of the answers solution cells write out (``checking.answer_key``), never the answers.\n"
        f"ANSWER_KEYS: dict[str, object] = {{{key_lines}\n}}\n"
    )
    all_names = "".join(f'\n    "{name}",' for name in names)
    parts.append(f"__all__ = [{all_names}\n]\n")
    for _, source in found.functions:
        parts.append("\n" + source.replace("{notebook}", notebook_path) + "\n")
    return "\n".join(parts)


def _merged(statements: set[str]) -> list[str]:
    """Import statements in isort's order, ``from m import a`` and ``from m import b`` merged into one."""
    plain = sorted(s for s in statements if s.startswith("import "))
    names: dict[str, list[str]] = {}
    for statement in statements:
        if statement.startswith("from "):
            module, _, name = statement.removeprefix("from ").partition(" import ")
            names.setdefault(module, []).append(name)
    froms = [f"from {module} import {', '.join(sorted(found))}" for module, found in sorted(names.items())]
    return plain + froms


def _quoted(value: object) -> str:
    """A literal in the formatter's style (double quotes)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _literal(value: object) -> str:
    """A dict or list of digests, one entry per line (diffs of a changed key stay readable)."""
    if isinstance(value, dict):
        return "{" + "".join(f"\n        {_quoted(k)}: {_quoted(v)}," for k, v in value.items()) + "\n    }"
    if isinstance(value, list):
        return "[" + "".join(f"\n        {_quoted(v)}," for v in value) + "\n    ]"
    return _quoted(value)


def reference_text(notebook_file, notebook_path: str, chapter: str) -> str:
    """Read a solution notebook and render its reference module (see :func:`render`)."""
    nb = nbformat.read(notebook_file, as_version=4)
    return render(nb, notebook_path, chapter)

"""SQL hygiene: only the view's and the tables' own definitions are ever interpolated into SQL.

Every string the package builds that looks like SQL (an f-string, a ``str.format`` or ``%``
template, a ``+`` concatenation, or the text of a ``psycopg2.sql.SQL``) is parsed with ``ast``,
and each value put into it must come from an allowed source:

* literals, and ``lambda_demo.view`` (its key, measures and the SQL it derives from them);
* module-level UPPER_CASE constants (whose own values are checked the same way), e.g. the
  column lists ``RAW_COLUMNS`` or ``_MEASURE_COLUMNS``;
* ``psycopg2.sql.Identifier``/``Literal``/``Placeholder``, which quote what they are given;
* the validating quoters listed in ``SANITISERS`` below, each with why it is safe;
* locals, loop and comprehension variables whose values are themselves allowed, and
  ``join``, ``str``, ``map`` ... of allowed values.

Anything else (a function parameter such as ``cutoff`` or ``location``, an attribute of one
such as ``settings.warehouse_schema``, the result of an unknown call) is reported with its
file and line: values reach SQL as bind parameters (``%s``, ``%(name)s``), never as text.
The checker runs without a stack; it is shown to fail on planted examples below.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "lambda_demo"

# Statement shapes, in any case; bare keywords count only in upper case, as this code writes
# SQL, so that prose such as "Delete that checkpoint" is not taken for SQL.
_SQL_SHAPES = re.compile(
    r"\bselect\b[\s\S]*\bfrom\b|\binsert\s+into\b|\bupdate\s+\S+\s+set\b|\bdelete\s+from\b"
    r"|\b(?:create|alter|drop)\s+(?:(?:or\s+replace|unique|temp|temporary|materialized)\s+)?"
    r"(?:table|schema|index|view|database|function|role|user|sequence|extension)\b"
    r"|\bcopy\s+\S+[\s\S]*\b(?:from|to)\b|\block\s+table\b|\btruncate\b|\bmerge\s+into\b",
    re.IGNORECASE,
)
_SQL_KEYWORDS = re.compile(
    r"\b(?:SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|COPY|LOCK|TRUNCATE|GRANT|MERGE"
    r"|WHERE|VALUES)\b"
)
_UPPER_CASE = re.compile(r"_*[A-Z][A-Z0-9_]*")

# Functions of the package that make any string safe to put into SQL, and why.
SANITISERS: dict[str, dict[str, str]] = {
    "lambda_demo/batch/loader.py": {
        "_checked": "returns its value only if it fully matches a strict pattern (no quote, "
        "backslash or control character), else raises SettingsError",
        "_identifier": "_checked against _IDENTIFIER, then double-quoted",
    },
}
# Functions that neither check nor taint: allowed exactly when their arguments are.
PASS_THROUGH: dict[str, set[str]] = {
    "lambda_demo/batch/loader.py": {"_literal"},  # single-quotes what _checked let through
    # The cutoff split and the first-delivery order, rendered from the SQL expressions and
    # column names they are given.
    "lambda_demo/contract.py": {"sql_batch_days", "sql_speed_days", "DeliveryColumns"},
    # Column lists built from the view and the literal column definitions.
    "lambda_demo/clients/warehouse.py": {"_column_list", "raw_tweets_columns"},
}
_SAFE_BUILTINS = {"int", "float", "len", "bool"}  # numbers cannot carry SQL
_TRANSPARENT_BUILTINS = {"str", "tuple", "list", "sorted", "reversed", "map", "filter", "repr"}
_PSYCOPG_QUOTERS = {"Identifier", "Literal", "Placeholder"}


def looks_like_sql(text: str) -> bool:
    return bool(_SQL_SHAPES.search(text) or _SQL_KEYWORDS.search(text))


@dataclass
class _Scope:
    """A function (params and local assignments) or a comprehension (its targets)."""

    params: set[str] = field(default_factory=set)
    values: dict[str, list[ast.expr]] = field(default_factory=dict)
    owner: str = "module"


@dataclass
class Report:
    inspected: list[int]  # lines of the SQL templates that take values
    violations: list[str]


def _targets(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _targets(element)
    elif isinstance(target, ast.Starred):
        yield from _targets(target.value)


def _own_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """The nodes of a function body, without those of nested functions, lambdas or classes."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _bindings(body: list[ast.stmt], scope: _Scope, *, module: bool = False) -> _Scope:
    for node in _own_nodes(body):
        pairs: list[tuple[ast.expr, ast.expr]] = []
        if isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            pairs = [(node.target, node.value)]
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            pairs = [(node.target, node.iter)]  # an element of the iterable
        elif isinstance(node, ast.NamedExpr):
            pairs = [(node.target, node.value)]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            pairs = [(i.optional_vars, i.context_expr) for i in node.items if i.optional_vars]
        elif isinstance(node, ast.ExceptHandler) and node.name:
            scope.params.add(node.name)  # an exception's text is not a definition
        elif not module and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope.params.add(node.name)  # a nested function's result is not checked here
        for target, value in pairs:
            for name in _targets(target):
                scope.values.setdefault(name, []).append(value)
    return scope


def _module_path(module: str | None) -> str:
    """``lambda_demo.contract`` -> ``lambda_demo/contract.py``, as the allowlists name files."""
    return f"{(module or '').replace('.', '/')}.py"


class _Checker:
    def __init__(self, tree: ast.Module, path: str) -> None:
        self.path = path
        self.sanitisers = set(SANITISERS.get(path, {}))
        self.pass_through = set(PASS_THROUGH.get(path, set()))
        self.view_aliases: set[str] = set()
        self.sql_aliases: set[str] = set()
        self.imported_constants: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    name = alias.asname or alias.name
                    if node.module == "lambda_demo" and alias.name == "view":
                        self.view_aliases.add(name)
                    elif node.module == "psycopg2" and alias.name == "sql":
                        self.sql_aliases.add(name)
                    elif alias.name in PASS_THROUGH.get(_module_path(node.module), set()):
                        self.pass_through.add(name)  # imported from where it is listed
                    elif _UPPER_CASE.fullmatch(name):
                        self.imported_constants.add(name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "lambda_demo.view" and alias.asname:
                        self.view_aliases.add(alias.asname)
        self.module = _bindings(tree.body, _Scope(), module=True)
        self.module_defs = {
            n.name
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        self.report = Report([], [])
        self._resolving: set[tuple[int, str]] = set()
        self._parts_of_a_concatenation: set[int] = set()
        self._visit(tree, [self.module])

    # --- walking ---------------------------------------------------------------------------

    def _visit(self, node: ast.AST, scopes: list[_Scope]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
            params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
            name = getattr(node, "name", "<lambda>")
            body = node.body if isinstance(node.body, list) else [ast.Expr(node.body)]
            scope = _bindings(body, _Scope(params=params, owner=f"{name}()"))
            for child in [*args.defaults, *args.kw_defaults]:
                if child is not None:
                    self._visit(child, scopes)
            for child in body:
                self._visit(child, [*scopes, scope])
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            scope = _Scope(owner="a comprehension")
            for generator in node.generators:
                self._visit(generator.iter, [*scopes, scope])
                for name in _targets(generator.target):
                    scope.values.setdefault(name, []).append(generator.iter)
            inner = [*scopes, scope]
            for generator in node.generators:
                for condition in generator.ifs:
                    self._visit(condition, inner)
            for part in (node.key, node.value) if isinstance(node, ast.DictComp) else [node.elt]:
                self._visit(part, inner)
            return
        self._check(node, scopes)
        for child in ast.iter_child_nodes(node):
            self._visit(child, scopes)

    def _check(self, node: ast.AST, scopes: list[_Scope]) -> None:
        template: str | None = None
        values: list[ast.expr] = []
        if isinstance(node, ast.JoinedStr):
            template = "".join(
                v.value if isinstance(v, ast.Constant) else " ? " for v in node.values
            )
            values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
                template, values = node.left.value, [node.right]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            if id(node) in self._parts_of_a_concatenation:
                return  # checked with the whole ``a + b + c``
            parts = self._concatenated(node)
            self._parts_of_a_concatenation |= {
                id(n) for n in ast.walk(node) if isinstance(n, ast.BinOp) and n is not node
            }
            strings = [p.value for p in parts if isinstance(p, ast.Constant)]
            if all(isinstance(s, str) for s in strings):
                template = " ? ".join(s for s in strings)
                values = [p for p in parts if not isinstance(p, ast.Constant)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            text = None
            if isinstance(receiver, ast.Name) and len(self.module.values.get(receiver.id, [])) == 1:
                receiver = self.module.values[receiver.id][0]  # QUERY = "..." ... QUERY.format()
            if isinstance(receiver, ast.Constant) and isinstance(receiver.value, str):
                text = receiver.value
            elif self._is_psycopg(receiver, "SQL") and receiver.args:
                first = receiver.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    text = first.value
            if node.func.attr == "format" and text is not None:
                template = text
                values = [*node.args, *(k.value for k in node.keywords)]
        if template is None or not values or not looks_like_sql(template):
            return
        self.report.inspected.append(node.lineno)
        for value in values:
            culprit = self._culprit(value, scopes)
            if culprit is not None:
                bad, why = culprit
                self.report.violations.append(
                    f"{self.path}:{node.lineno}: {ast.unparse(value)!r} is put into SQL text, "
                    f"and {ast.unparse(bad)!r} is {why}"
                )

    def _concatenated(self, node: ast.expr) -> list[ast.expr]:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return [*self._concatenated(node.left), *self._concatenated(node.right)]
        return [node]

    # --- where a value comes from ----------------------------------------------------------

    def _is_psycopg(self, node: ast.expr, attr: str | None = None) -> bool:
        """``sql.<attr>(...)`` (or the bare ``sql.<attr>``) for the psycopg2.sql module."""
        func = node.func if isinstance(node, ast.Call) else node
        return (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.sql_aliases
            and (attr is None or func.attr == attr)
        )

    def _culprit(self, node: ast.expr, scopes: list[_Scope]) -> tuple[ast.expr, str] | None:
        """None if ``node`` comes from allowed sources only, else (the bad part, why)."""
        check = self._culprit
        if isinstance(node, ast.Constant):
            return None
        if isinstance(node, ast.Name):
            return self._name(node, scopes)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in self.view_aliases:
                return None
            if self._is_psycopg(node) and node.attr in _PSYCOPG_QUOTERS:
                return None
            return check(node.value, scopes)
        if isinstance(node, ast.Call):
            return self._call(node, scopes)
        if isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            scope = _Scope(owner="a comprehension")
            for generator in node.generators:  # the elements matter, not the iterable
                for name in _targets(generator.target):
                    scope.values.setdefault(name, []).append(generator.iter)
            elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            return self._first(elements, [*scopes, scope])
        if isinstance(node, ast.Dict):
            return self._first([v for v in (*node.keys, *node.values) if v is not None], scopes)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return self._first(node.elts, scopes)
        if isinstance(node, ast.JoinedStr):
            values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
            return self._first(values, scopes)
        if isinstance(node, ast.FormattedValue):
            return check(node.value, scopes)
        if isinstance(node, ast.BinOp):
            return self._first([node.left, node.right], scopes)
        if isinstance(node, ast.IfExp):
            return self._first([node.body, node.orelse], scopes)
        if isinstance(node, ast.Starred):
            return check(node.value, scopes)
        if isinstance(node, ast.Subscript):
            return check(node.value, scopes)
        return node, "not a definition of the view or of a table"

    def _first(self, nodes: list[ast.expr], scopes: list[_Scope]) -> tuple[ast.expr, str] | None:
        for part in nodes:
            bad = self._culprit(part, scopes)
            if bad is not None:
                return bad
        return None

    def _call(self, node: ast.Call, scopes: list[_Scope]) -> tuple[ast.expr, str] | None:
        args = [*node.args, *(k.value for k in node.keywords)]
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in self.sanitisers:
                return None
            if func.id in _SAFE_BUILTINS and not self._bound(func.id, scopes):
                return None
            if func.id in _TRANSPARENT_BUILTINS or func.id in self.pass_through:
                return self._first(args, scopes)
            return func, "a call whose result is not known to be safe"
        if isinstance(func, ast.Attribute):
            if isinstance(func.value, ast.Name) and func.value.id in self.view_aliases:
                return self._first(args, scopes)  # SQL that lambda_demo.view derives
            if self._is_psycopg(node):
                if func.attr in _PSYCOPG_QUOTERS:
                    return None
                if func.attr == "SQL":
                    return self._first(args, scopes)  # raw SQL text: must be allowed itself
                return func, "a psycopg2.sql object that does not quote"
            # A method of an allowed value (", ".join(...), m.sql()): allowed with its arguments.
            return self._first([func.value, *args], scopes)
        return func, "a call whose result is not known to be safe"

    def _bound(self, name: str, scopes: list[_Scope]) -> bool:
        return any(name in s.params or name in s.values for s in scopes)

    def _name(self, node: ast.Name, scopes: list[_Scope]) -> tuple[ast.expr, str] | None:
        name = node.id
        for depth in range(len(scopes) - 1, -1, -1):
            scope = scopes[depth]
            if name in scope.params:
                return node, f"a parameter (or nested definition) of {scope.owner}"
            if name in scope.values:
                if scope is self.module and not _UPPER_CASE.fullmatch(name):
                    return node, "a module-level name that is not an UPPER_CASE constant"
                key = (id(scope), name)
                if key in self._resolving:
                    return None  # its other assignments decide
                self._resolving.add(key)
                try:
                    for value in scope.values[name]:
                        bad = self._culprit(value, scopes[: depth + 1])
                        if bad is not None:
                            return bad
                finally:
                    self._resolving.discard(key)
                return None
        if name in self.imported_constants or name in self.view_aliases:
            return None
        if name in self.sanitisers or name in self.pass_through:
            return None  # map(_identifier, ...)
        if name in self.module_defs:
            return node, "a function or class of the module, not a definition of the view"
        if hasattr(builtins, name):
            return None if name in _SAFE_BUILTINS | _TRANSPARENT_BUILTINS else (node, "a builtin")
        return node, "a name of unknown origin"


def check_source(source: str, path: str = "<string>") -> Report:
    return _Checker(ast.parse(source), path).report


def check_package() -> Report:
    total = Report([], [])
    for file in sorted(PACKAGE.rglob("*.py")):
        report = check_source(file.read_text(), str(file.relative_to(REPO)))
        total.inspected += report.inspected
        total.violations += report.violations
    return total


# --- the package -----------------------------------------------------------------------------


def test_the_package_puts_only_view_and_column_definitions_into_sql() -> None:
    report = check_package()
    assert report.violations == []
    # The f-string builders (batch view, DDL, speed upsert, totals, COPY...) were all seen.
    assert len(report.inspected) >= 6, report.inspected


def test_every_sanitiser_exists_where_it_is_listed() -> None:
    """An allowlist entry for a function that is gone would silently allow a new one."""
    for path, names in [*SANITISERS.items(), *PASS_THROUGH.items()]:
        tree = ast.parse((REPO / path).read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert set(names) <= defined, (path, set(names) - defined)


# --- the checker fails when it should ----------------------------------------------------------


def test_a_value_interpolated_into_sql_is_reported_with_file_and_line() -> None:
    source = (
        "def find(cur, user_value):\n"
        "    cur.execute(f\"SELECT * FROM t WHERE x = '{user_value}'\")\n"
    )
    (violation,) = check_source(source, "pkg/find.py").violations
    assert violation.startswith("pkg/find.py:2: 'user_value' is put into SQL text")
    assert "a parameter" in violation and "find()" in violation


def test_view_and_column_definitions_are_allowed() -> None:
    source = (
        "from psycopg2 import sql\n"
        "from lambda_demo import view\n"
        "COLUMNS = ('a', 'b')\n"
        "def read(cur, location):\n"
        "    cols = ', '.join(view.COLUMNS)\n"
        "    cur.execute(f'SELECT {cols}, {view.sql_select_list()} FROM t WHERE x = %s',\n"
        "                (location,))\n"
        "    cur.execute(f\"INSERT INTO t ({', '.join(COLUMNS)}) VALUES %s\", (location,))\n"
        "    sums = ', '.join(f'SUM({m.name}) AS {m.name}' for m in view.MEASURES)\n"
        "    cur.execute(f'SELECT {sums} FROM t')\n"
        "    cur.execute(sql.SQL('SELECT {} FROM {}').format(\n"
        "        sql.SQL(', ').join(map(sql.Identifier, COLUMNS)), sql.Identifier(location)))\n"
    )
    report = check_source(source, "pkg/read.py")
    assert report.violations == []
    assert len(report.inspected) == 4


VIOLATIONS = {
    "a value of a dict comprehension": (
        "from psycopg2 import sql\n"
        "def f(cur, kinds):\n"
        "    wanted = {name: kind for name, kind in kinds.items()}\n"
        "    for name, kind in wanted.items():\n"
        "        cur.execute(sql.SQL('ALTER TABLE t ADD COLUMN {} {}').format(\n"
        "            sql.Identifier(name), sql.SQL(kind)))\n",
        "'kinds'",
    ),
    "a pass-through function imported from a module that does not list it": (
        "from lambda_demo.view import sql_batch_days\n"
        "def f(cur, day):\n"
        "    cur.execute(f'SELECT 1 FROM v WHERE {sql_batch_days(day, 1)}')\n",
        "'sql_batch_days'",
    ),
    "a local assigned from a parameter": (
        "def f(cur, cutoff):\n"
        "    day = cutoff.isoformat()\n"
        "    cur.execute(f\"DELETE FROM speed_view WHERE ingest_day < '{day}'\")\n",
        "'cutoff'",
    ),
    "an attribute of a parameter": (
        "def f(cur, settings):\n"
        "    cur.execute(f'CREATE SCHEMA IF NOT EXISTS {settings.warehouse_schema}')\n",
        "'settings'",
    ),
    "str.format of a module constant": (
        "QUERY = \"SELECT * FROM v WHERE location = '{}'\"\n"
        "def f(cur, location):\n"
        "    cur.execute(QUERY.format(location))\n",
        "'location'",
    ),
    "str.format": (
        "def f(cur, location):\n"
        "    cur.execute(\"SELECT * FROM v WHERE location = '{}'\".format(location))\n",
        "'location'",
    ),
    "% formatting": (
        "def f(cur, location):\n"
        "    cur.execute(\"SELECT * FROM v WHERE location = '%s'\" % location)\n",
        "'location'",
    ),
    "concatenation": (
        "def f(cur, location):\n"
        '    cur.execute("SELECT * FROM v WHERE location = \'" + location + "\'")\n',
        "'location'",
    ),
    "psycopg2 sql.SQL of a parameter": (
        "from psycopg2 import sql\n"
        "def f(cur, by):\n"
        "    cur.execute(sql.SQL('SELECT * FROM v ORDER BY {}').format(sql.SQL(by)))\n",
        "'by'",
    ),
    "a comprehension over a parameter": (
        "def f(cur, names):\n"
        "    cols = ', '.join(n for n in names)\n"
        "    cur.execute(f'SELECT {cols} FROM v')\n",
        "'names'",
    ),
    "an unknown call": (
        "def f(cur):\n    cur.execute(f'SELECT * FROM {input()}')\n",
        "'input'",
    ),
    "a lower-case statement": (
        "def f(cur, v):\n    cur.execute(f\"select * from t where x = '{v}'\")\n",
        "'v'",
    ),
    "a module-level variable": (
        "import os\ntable = os.environ['T']\n"
        "def f(cur):\n    cur.execute(f'SELECT * FROM {table}')\n",
        "'table'",
    ),
    "an UPPER_CASE constant with a tainted value": (
        "import os\nTABLE = os.environ['T']\n"
        "def f(cur):\n    cur.execute(f'SELECT * FROM {TABLE}')\n",
        "'os'",
    ),
    "a value passed to a view function": (
        "from lambda_demo import view\n"
        "def f(cur, location):\n"
        "    cur.execute(f'SELECT {view.sql_select_list(location)} FROM v')\n",
        "'location'",
    ),
    "_literal without _checked": (
        "def f(cur, bucket):\n    cur.execute(f'COPY t FROM {_literal(bucket)}')\n",
        "'bucket'",
    ),
}


@pytest.mark.parametrize("case", VIOLATIONS, ids=list(VIOLATIONS))
def test_each_way_of_putting_a_value_into_sql_is_reported(case: str) -> None:
    source, culprit = VIOLATIONS[case]
    violations = check_source(source, "lambda_demo/batch/loader.py").violations
    assert len(violations) == 1, violations
    assert f"and {culprit} is" in violations[0]


def test_sanitisers_are_allowed_only_in_their_own_module() -> None:
    source = "def f(cur, bucket):\n    cur.execute(f'COPY t FROM {_literal(_checked(bucket))}')\n"
    assert check_source(source, "lambda_demo/batch/loader.py").violations == []
    assert len(check_source(source, "lambda_demo/other.py").violations) == 1


def test_prose_and_bind_parameters_are_not_reported() -> None:
    source = (
        "def f(cur, cutoff, path):\n"
        "    cur.execute('DELETE FROM speed_view WHERE ingest_day < %s', (cutoff,))\n"
        "    raise ValueError(f'Delete that checkpoint directory: {path}')\n"
    )
    report = check_source(source)
    assert report.violations == [] and report.inspected == []

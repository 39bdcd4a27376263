"""DataJoint's internals stay in schemas/compat.py, and compat notices when one of them moves."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPAT = REPO / "schemas" / "compat.py"
DJ_BASES = ("Computed", "Imported", "Manual", "Lookup", "Part", "Table", "Schema", "Connection")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _datajoint_private_names() -> set[str]:
    """Every single-underscore name DataJoint's source defines or uses as an attribute."""
    import datajoint

    names: set[str] = set()
    for path in Path(datajoint.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _is_private(node.name):
                names.add(node.name)
    names.add("_replace")  # namedtuple's, on DataJoint's heading attributes
    return names


def _our_modules() -> list[Path]:
    return sorted(p for folder in ("populate", "schemas") for p in (REPO / folder).rglob("*.py") if p != COMPAT)


def _touches(path: Path, private: set[str]) -> list[str]:
    """``file:line name`` for each private DataJoint name the module's source touches."""
    tree = ast.parse(path.read_text())
    found = []
    datajoint_classes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            if any(b.startswith(("dj.", "datajoint.")) or b in DJ_BASES for b in bases):
                datajoint_classes.add(node)
    in_dj_class = {id(n) for c in datajoint_classes for n in ast.walk(c)}
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("datajoint"):
            found += [f"{where} from {node.module} import {a.name}" for a in node.names if _is_private(a.name)]
            if any(_is_private(part) for part in (node.module or "").split(".")):
                found.append(f"{where} from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in private:
            owner = ast.unparse(node.value)
            # a name our own class (not a DataJoint table) keeps on itself is ours
            if owner in ("self", "cls") and id(node) not in in_dj_class:
                continue
            found.append(f"{where} {owner}.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            found.append(f"{where} {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_only_compat_touches_datajoint_private_names(db):
    """Every module of populate/ and schemas/ imports, and none but compat touches DataJoint's private names."""
    import populate
    import schemas

    for package in (populate, schemas):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__"):  # runs the command line
                importlib.import_module(info.name)
    private = _datajoint_private_names()
    assert {"_populate1", "_in_transaction", "_config", "_get_job_version", "_init_from_database"} <= private
    offenders = [hit for path in _our_modules() for hit in _touches(path, private)]
    assert not offenders, "DataJoint internals outside schemas/compat.py:\n" + "\n".join(offenders)


def test_the_scan_would_catch_a_private_name(tmp_path):
    """The check above is not vacuous: it flags the very uses compat exists to hold."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from datajoint.jobs import _get_job_version\n"
        "import datajoint as dj\n"
        "def f(table, connection):\n"
        "    connection._in_transaction = False\n"
        "    getattr(connection, '_pipeline_x', None)\n"
        "    return table._populate1({}, None, True, True)\n"
        "class T(dj.Computed):\n"
        "    def make(self, key):\n"
        "        self._populate1(key, None, True, True)\n"
    )
    hits = _touches(sample, _datajoint_private_names())
    assert len(hits) == 5, hits


def test_version_check_names_the_tested_versions(monkeypatch):
    from schemas import compat

    compat.check_version(compat.TESTED_VERSIONS[0])
    monkeypatch.delenv(compat.ALLOW_UNTESTED, raising=False)
    for untested in ("2.4.0", "3.0.0", "2.3.4"):
        with pytest.raises(compat.CompatError, match=compat.TESTED_VERSIONS[0]):
            compat.check_version(untested)
    monkeypatch.setenv(compat.ALLOW_UNTESTED, "1")
    compat.check_version("2.4.0")  # a warning only


def test_installed_datajoint_is_a_tested_one_and_pinned_alike():
    import datajoint as dj

    from schemas import compat

    assert dj.__version__ in compat.TESTED_VERSIONS
    pyproject = (REPO / "pyproject.toml").read_text()
    low, high = compat.TESTED_RANGE
    assert f'"datajoint>={".".join(map(str, low))},<{high[0]}.{high[1]}"' in pyproject


@pytest.mark.parametrize(
    "owner, name",
    [
        ("datajoint.autopopulate:AutoPopulate", "_populate1"),
        ("datajoint.heading:Heading", "_init_from_database"),
        ("datajoint.storage:StorageBackend", "_full_path"),
        ("datajoint.jobs", "_get_job_version"),
    ],
)
def test_a_moved_internal_fails_loudly(monkeypatch, owner, name):
    from schemas import compat

    module, _, attribute = owner.partition(":")
    target = importlib.import_module(module)
    if attribute:
        target = getattr(target, attribute)
    compat.check_internals()
    monkeypatch.delattr(target, name)
    with pytest.raises(compat.CompatError, match=name):
        compat.check_internals()


def test_a_changed_signature_fails_loudly(monkeypatch):
    from datajoint.autopopulate import AutoPopulate

    from schemas import compat

    monkeypatch.setattr(AutoPopulate, "_populate1", lambda self, key, jobs, **options: None)
    with pytest.raises(compat.CompatError, match="suppress_errors"):
        compat.check_internals()


def test_connection_internals_on_a_live_connection(db):
    """The connection attributes compat reads exist, and the shims built on them do their job."""
    import datajoint as dj

    from schemas import compat

    connection = dj.conn()
    compat.check_connection(connection)
    assert isinstance(compat.job_version(connection), str)
    assert compat.keep_completed(connection) is bool(dj.config.jobs.keep_completed)
    compat.make_resilient(connection)
    connection.close()
    connection.connect()
    sql = "SELECT pg_backend_pid()" if connection.adapter.backend == "postgresql" else "SELECT CONNECTION_ID()"
    assert connection.connection_id == connection.query(sql).fetchone()[0]
    connection.start_transaction()
    assert connection.in_transaction
    connection.close()
    connection.connect()
    compat.forget_transaction(connection)
    assert not connection.in_transaction
    connection.query("SELECT 1")


def test_lost_postgresql_connection_is_recognised(db):
    import datajoint as dj
    import psycopg2
    from datajoint.errors import LostConnectionError

    from schemas import compat

    connection = dj.conn()
    if connection.adapter.backend != "postgresql":
        pytest.skip("the translation fix is PostgreSQL's")
    compat.make_resilient(connection)
    closed = psycopg2.InterfaceError("connection already closed")
    assert isinstance(connection.adapter.translate_error(closed), LostConnectionError)


def test_the_command_line_parses_before_datajoint_is_imported():
    """DataJoint reads its settings on import; the parser (and its --help) must not import it, nor pandas."""
    import subprocess
    import sys

    code = (
        "import sys; from populate.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('datajoint', 'pandas', 'schemas.compat') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_results_choices_are_the_listings():
    from populate.cli import main as cli
    from populate.cli import results

    parser = cli.build_parser()
    assert parser.parse_args(["results", "models"]).what == "models"
    choices = next(a for a in parser._subparsers._group_actions[0].choices["results"]._actions if a.dest == "what")
    assert set(choices.choices) == set(results.REPORTS)

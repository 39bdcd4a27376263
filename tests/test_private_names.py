"""A name another module uses is public: no module imports or reaches into another module's ``_private`` names.

The scan reads every module of pipeline/, schemas/, populate/ and benchmarks/ and reports, as ``file:line``,
``from m import _name``, ``import m._module``, ``owner._name`` where the owner is not the module's own
``self``/``cls``/``super()`` or a class the module defines, and ``getattr(owner, "_name")`` and its siblings.
schemas/compat.py is the one exemption: it exists to hold DataJoint's internals (tests/schemas/test_compat.py
keeps them there).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("pipeline", "schemas", "populate", "benchmarks")
EXEMPT = {REPO / "schemas" / "compat.py"}
OWN = ("self", "cls", "super()")
# underscore names their library documents as public API
DOCUMENTED_PUBLIC = {"os._exit"}
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}
ATTRIBUTE_BUILTINS = ("getattr", "setattr", "hasattr", "delattr")


def is_private(name: str) -> bool:
    """Single leading underscore, not a dunder such as ``__init__``."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, where: str) -> list[str]:
    """``where:line what`` for each use, in ``source``, of a private name that belongs to another module."""
    tree = ast.parse(source)
    own_classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    found = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            found += [f"{line} from {module} import {a.name}" for a in node.names if is_private(a.name)]
            if any(is_private(part) for part in module.split(".")):
                found.append(f"{line} from {module}")
        elif isinstance(node, ast.Import):
            found += [f"{line} import {a.name}" for a in node.names if any(map(is_private, a.name.split(".")))]
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = ast.unparse(node.value)
            if owner in OWN or owner in own_classes or node.attr in NAMEDTUPLE_API:
                continue
            if f"{owner}.{node.attr}" not in DOCUMENTED_PUBLIC:
                found.append(f"{line} {owner}.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_BUILTINS
            and len(node.args) >= 2
            and ast.unparse(node.args[0]) not in OWN
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            found.append(f"{line} {node.func.id}({ast.unparse(node.args[0])}, {node.args[1].value!r})")
    return found


def test_no_module_uses_another_modules_private_names():
    """Every private name used across a module boundary is listed, so it can be made public or kept inside."""
    paths = sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py") if p not in EXEMPT)
    assert len(paths) > 50, "the scan found the source folders"
    offenders = [hit for p in paths for hit in private_uses(p.read_text(), str(p.relative_to(REPO)))]
    assert not offenders, "private names used outside their module:\n" + "\n".join(offenders)


def test_the_scan_flags_a_private_use_and_passes_a_clean_module():
    """The check above is not vacuous: each form of reaching in is caught, and a module's own names are not."""
    reaching_in = (
        "import numpy as np\n"
        "import torch._dynamo\n"
        "from populate.report.sections import _require\n"
        "from pipeline._impl import fit\n"
        "def f(store, collector):\n"
        "    hasattr(np, '_core')\n"
        "    return store._full_path(collector._hash_prefix)\n"
    )
    hits = private_uses(reaching_in, "sample.py")
    assert [h.split()[0] for h in hits] == ["sample.py:" + str(n) for n in (2, 3, 4, 6, 7, 7)], hits
    assert any("store._full_path" in h for h in hits) and any("collector._hash_prefix" in h for h in hits)

    clean = (
        "import os\n"
        "from collections import namedtuple\n"
        "Point = namedtuple('Point', 'x y')\n"
        "class Cache:\n"
        "    _allowed = {'a'}\n"
        "    def __init__(self):\n"
        "        self._items = {}\n"
        "        super().__init__()\n"
        "    @classmethod\n"
        "    def allowed(cls):\n"
        "        return cls._allowed | Cache._allowed\n"
        "def _helper(point):\n"
        "    getattr(point, 'x')\n"
        "    return point._replace(x=1)\n"
        "def stop():\n"
        "    os._exit(1)\n"
    )
    assert private_uses(clean, "clean.py") == []

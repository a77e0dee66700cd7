"""The layering of docs/architecture.md, enforced: a module imports only its own layer or lower.

Every import statement of the package is read from the source (imports under
``if TYPE_CHECKING:`` are for annotations only and do not count). A new module
must be given a layer here, and the docs say why it sits there.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

import geofence

PACKAGE: Final = Path(geofence.__file__).resolve().parent

#: Layers from the bottom up; a module may import from its own layer and the ones below.
#: Names are module prefixes (the longest match wins).
LAYERS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "vocabulary",
        (
            "geofence.errors",
            "geofence.kinds",
            "geofence.addr",
            "geofence.records",
            "geofence.decision",
            "geofence.context",
            "geofence.signals.base",
            "geofence.signals.codes",
            "geofence._data",
            "geofence._cache",
        ),
    ),
    ("sources", ("geofence.sources",)),
    ("snapshot", ("geofence.snapshot", "geofence._core")),
    ("policy", ("geofence.policy",)),
    (
        "engine",
        ("geofence.engine", "geofence._batch", "geofence.batch_arrow", "geofence.reloading"),
    ),
    ("signals", ("geofence.signals",)),
    ("integrations", ("geofence.integrations", "geofence.testing")),
    ("tools", ("geofence.export", "geofence.audit")),
    ("cli", ("geofence.cli",)),
)

#: The package itself only re-exports names lazily (nothing is imported at run time),
#: so any module may read ``geofence.__version__`` from it.
FACADE: Final = "geofence"


def layer_of(module: str) -> int:
    best, rank = "", -1
    for k, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, k
    if rank < 0:
        raise LookupError(f"{module} has no layer in tests/test_architecture.py")
    return rank


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return (
        base.with_suffix(".py").is_file()
        or (base / "__init__.py").is_file()
        or name == ("geofence._core")
    )


def run_time_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every geofence import that runs (outside TYPE_CHECKING blocks)."""
    out: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for other in node.orelse:
                visit(other)
            return
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names if a.name.startswith(FACADE))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(FACADE):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.append((node.lineno, sub if _is_module(sub) else node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


SOURCES: Final = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in SOURCES:
        name = module_name(path)
        if name != FACADE:
            layer_of(name)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_go_down_the_layers(path: Path) -> None:
    name = module_name(path)
    if name == FACADE:
        return
    mine = layer_of(name)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wrong = [
        f"line {line}: {name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for line, target in run_time_imports(tree)
        if target != FACADE and layer_of(target) > mine
    ]
    assert wrong == []


def test_the_checker_catches_an_upward_import() -> None:
    """The rule is not vacuous: a policy module importing the engine is reported."""
    tree = ast.parse("from geofence.engine import Geofence\nfrom geofence.kinds import X\n")
    found = run_time_imports(tree)
    assert found == [(1, "geofence.engine"), (2, "geofence.kinds")]
    assert layer_of("geofence.engine") > layer_of("geofence.policy.compile")
    annotated = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import geofence.cli\n"
    )
    assert run_time_imports(annotated) == []


def test_the_fast_path_lives_in_one_place() -> None:
    """Only the snapshot layer's search module touches the compiled core."""
    users = [
        module_name(path)
        for path in SOURCES
        for _line, target in run_time_imports(ast.parse(path.read_text(encoding="utf-8")))
        if target == "geofence._core"
    ]
    assert users == ["geofence.snapshot.search"]

"""An import-linter contract type for what the built-in ones cannot see: a submodule or a
function of an outside package (e.g. `asyncio.subprocess`, `asyncio.create_subprocess_exec`).

import-linter keeps only the top package of an outside library in its graph ("asyncio"),
so a forbidden contract cannot name `asyncio.subprocess` without forbidding all of asyncio.
This contract reads the source of every module under `source_modules` and fails on any
import of, or attribute reference to, a name under `forbidden_names`, through aliases too
(`import asyncio as aio; aio.create_subprocess_exec(...)`, `from asyncio import subprocess`).
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _is_under(name: str, forbidden: set[str]) -> str | None:
    for f in forbidden:
        if name == f or name.startswith(f + "."):
            return f
    return None


def _dotted(node: ast.AST) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None for anything that is not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def forbidden_uses(source: str, forbidden: set[str]) -> Iterator[tuple[int, str]]:
    """(line, full name) of each import of, or reference to, a forbidden name."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> the full dotted name it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases.setdefault(a.name.split(".")[0], a.name.split(".")[0])
                if _is_under(a.name, forbidden):
                    yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                if _is_under(node.module, forbidden) or _is_under(full, forbidden):
                    yield node.lineno, full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and not isinstance(
                getattr(node, "ctx", None), ast.Store):
            parts = _dotted(node)
            if not parts or parts[0] not in aliases:
                continue
            full = ".".join([aliases[parts[0]], *parts[1:]])
            if len(parts) > 1 and _is_under(full, forbidden):
                yield node.lineno, full


def _source_file(module: str) -> Path | None:
    """The module's file, found from its top package's folder (as grimp found it), without
    importing anything of the package."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


class ForbiddenNamesContract(Contract):
    """Modules under `source_modules` neither import nor use a name under `forbidden_names`.

    Configuration options:
        - source_modules:  packages or modules whose source is read.
        - forbidden_names: dotted names (modules, submodules, functions) they may not touch.
    """

    type_name = "forbidden_names"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    forbidden_names = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        forbidden = set(self.forbidden_names)  # type: ignore[arg-type]
        found = []
        for source in self.source_modules:  # type: ignore[attr-defined]
            modules = {source.name} | graph.find_descendants(source.name)
            for module in sorted(modules):
                path = _source_file(module)
                if path is None:
                    continue
                for line, name in forbidden_uses(path.read_text(), forbidden):
                    found.append({"module": module, "line": line, "name": name})
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for f in check.metadata["found"]:
            output.print_error(f"{f['module']}:{f['line']} uses {f['name']}", bold=False)
            output.new_line()

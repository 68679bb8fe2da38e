"""The agent's folders in memory (the Folders port): entries as a test lays them out, and
files that refuse to go."""

from __future__ import annotations

from pathlib import Path


class FakeFolders:
    def __init__(self) -> None:
        self.tree: dict[Path, dict[str, bool]] = {}  # folder -> entry name -> is a folder
        self.stuck: set[Path] = set()  # remove_matching fails on these (EACCES)

    def add(self, path: Path, *, folder: bool = False) -> Path:
        self.tree.setdefault(path.parent, {})[path.name] = folder
        if folder:
            self.tree.setdefault(path, {})
        return path

    def exists(self, path: Path) -> bool:
        return path.name in self.tree.get(path.parent, {})

    def entries(self, folder: Path) -> list[tuple[Path, bool]]:
        return [(folder / name, is_dir) for name, is_dir in sorted(self.tree.get(folder, {}).items())]

    def remove_matching(self, folder: Path, suffix: str) -> tuple[list[Path], list[str]]:
        removed, errors = [], []
        for name in sorted(self.tree.get(folder, {})):
            path = folder / name
            if not name.endswith(suffix):
                continue
            if path in self.stuck:
                errors.append(f"{path}: Permission denied")
                continue
            del self.tree[folder][name]
            removed.append(path)
        return removed, errors

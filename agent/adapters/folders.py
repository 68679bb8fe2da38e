"""The agent's folders on the local file system (the Folders port)."""

from __future__ import annotations

from pathlib import Path


class LocalFolders:
    def entries(self, folder: Path) -> list[tuple[Path, bool]]:
        if not folder.is_dir():
            return []
        return [(entry, entry.is_dir()) for entry in sorted(folder.iterdir())]

    def remove_matching(self, folder: Path, suffix: str) -> tuple[list[Path], list[str]]:
        removed: list[Path] = []
        errors: list[str] = []
        for path in sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                errors.append(f"{path}: {e.strerror}")
                continue
            removed.append(path)
        return removed, errors

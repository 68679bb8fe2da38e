"""The import contracts in pyproject.toml hold the layers by themselves: each import that
crosses a layer makes `lint-imports` fail. Checked on a scratch copy of the package, with
one bad line added at a time."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.runs_linter


def scratch_copy(tmp: Path) -> Path:
    for name in ("agent", "tools"):
        shutil.copytree(ROOT / name, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_clean_copy_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(scratch_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("agent/adapters/qemu_img.py", "from agent.core import jobs", "Layers"),
    ("agent/adapters/sqlite_store.py", "import agent.core.servers", "Layers"),
    ("agent/core/servers.py", "from agent.config import Config", "read no settings"),
    ("agent/core/monitor.py", "import agent.config", "read no settings"),
    ("agent/core/recovery.py", "from agent.adapters import qemu_img", "Layers"),
    ("agent/core/doctor.py", "import asyncio.subprocess", "start processes"),
    ("agent/core/doctor.py", "from asyncio import create_subprocess_exec", "start processes"),
    ("agent/core/doctor.py", "import asyncio as aio\nRUN = aio.create_subprocess_exec", "start processes"),
    ("agent/api/routes_catalog.py", "from asyncio.subprocess import PIPE", "start processes"),
    ("agent/api/routes_catalog.py", "from agent.adapters import sqlite_store", "outside things"),
    ("agent/api/app.py", "from agent.protocols import Store", "never a port"),
    # Even the composition root: prometheus_client is a test-only package (issue 15).
    ("agent/app.py", "from prometheus_client import generate_latest", "only its tests install"),
])
def test_a_layer_crossing_import_breaks_a_contract(tmp_path: Path, module: str, line: str,
                                                   broken: str) -> None:
    copy = scratch_copy(tmp_path)
    with (copy / module).open("a") as f:
        f.write(f"\n{line}\n")
    result = lint_imports(copy)
    assert result.returncode != 0, result.stdout
    broken_part = result.stdout.split("Broken contracts", 1)[1]
    assert broken in broken_part, result.stdout

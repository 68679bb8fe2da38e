"""The bench's writer (bench/report.py) keeps the rows of figures a run did not measure,
even in a checkout that has no bench/results (it is not in git): from the README's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.report import END_MARK, START_MARK, Figure

OLD_ROW = ("| 4. SHUTOFF in the API after a guest poweroff (median of 10) | 0.07 s | 15.00 s (Nova) "
           "| 0.00 | < 0.5 s (met) | 1.6 → 0.8 | 11-28 01:07 | `python -m bench shutoff` |")
OLD_NOTE = "- *4. SHUTOFF in the API after a guest poweroff (median of 10)*: one server"


@pytest.fixture
def bench_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\n\n{START_MARK}\nLatest run x\n\n| Figure | Agent | Reference | "
                      f"Ratio | Target | Load (1 min) | Run | Reproduce |\n|---|---|---|---|---|"
                      f"---|---|---|\n{OLD_ROW}\n\nNotes:\n\n{OLD_NOTE}\n{END_MARK}\ntail\n")
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")
    return tmp_path


def _run() -> dict[str, object]:
    return {"started_at": "2026-12-01T23:00:00+00:00", "duration_s": 1.0,
            "machine": {"nproc": 2, "cpu": "cpu", "mem_gib": 1, "virt_type": "qemu",
                        "virt_reason": "r", "load_average_start": [1.0, 1.0, 1.0],
                        "qemu_processes_at_start": 0, "qemu": "q", "libvirt": "l",
                        "libguestfs": "g"},
            "load_average_end": [1.0, 1.0, 1.0]}


def _figure(title: str = "14. Fleet: GET /servers/detail (median of 100)") -> Figure:
    return Figure(key="fleet-api-median", title=title, agent_s=10.0, reference_s=8.0,
                  reference_label="one agent", target_max=None, command="python -m bench fleet-api",
                  unit="ms", notes=["seeded"])


def _shutoff_renamed() -> Figure:
    """Figure 4 again, under a title that no longer matches its README row."""
    return Figure(key="shutoff-api-median", title="4. SHUTOFF, renamed", agent_s=0.1,
                  reference_s=15, reference_label="Nova", target_max=None,
                  command="python -m bench shutoff")


def test_a_run_of_one_figure_keeps_the_readme_rows_of_the_others(bench_dir: Path) -> None:
    report.write(_run(), [_figure()], [], readme=True)
    text = (bench_dir / "README.md").read_text()
    assert OLD_ROW in text and OLD_NOTE in text
    assert "| 14. Fleet: GET /servers/detail (median of 100) | 10.0 ms |" in text
    assert text.index(OLD_ROW) < text.index("| 14. Fleet")  # by figure number
    assert text.endswith(f"{END_MARK}\ntail\n")
    kept = json.loads((bench_dir / "results" / "latest.json").read_text())["figures"]
    assert kept[0]["title"].startswith("4. SHUTOFF")  # and kept for next time


def test_a_fresh_row_replaces_the_readme_row_of_the_same_title(bench_dir: Path) -> None:
    title = "4. SHUTOFF in the API after a guest poweroff (median of 10)"
    report.write(_run(), [_figure(title)], [], readme=True)
    text = (bench_dir / "README.md").read_text()
    assert OLD_ROW not in text and OLD_NOTE not in text
    assert text.count(f"| {title} |") == 1


def test_without_readme_writing_the_readme_rows_are_not_taken(bench_dir: Path) -> None:
    report.write(_run(), [_figure()], [], readme=False)
    kept = json.loads((bench_dir / "results" / "latest.json").read_text())["figures"]
    assert [r["key"] for r in kept] == ["fleet-api-median"]


def test_a_figure_run_again_replaces_its_readme_rows_whatever_their_titles(bench_dir: Path) -> None:
    """A title that carries a measured detail changes between runs: the figure's old row
    (same command) must not stay beside the new one."""
    report.write(_run(), [_shutoff_renamed()], [], readme=True)
    text = (bench_dir / "README.md").read_text()
    assert OLD_ROW not in text and "| 4. SHUTOFF, renamed |" in text


def test_a_figure_run_later_replaces_its_readme_rows_carried_by_an_earlier_run(
        bench_dir: Path) -> None:
    """A run of another figure carries the README's rows into latest.json; the next run of
    their own figure must drop them there too, not keep them beside its fresh rows."""
    report.write(_run(), [_figure()], [], readme=True)  # carries the SHUTOFF row along
    report.write(_run(), [_shutoff_renamed()], [], readme=True)
    text = (bench_dir / "README.md").read_text()
    assert OLD_ROW not in text and "| 4. SHUTOFF, renamed |" in text
    assert "| 14. Fleet: GET /servers/detail (median of 100) | 10.0 ms |" in text


def test_of_two_readme_rows_of_one_title_the_newer_is_kept(bench_dir: Path) -> None:
    readme = bench_dir / "README.md"
    newer = OLD_ROW.replace("0.07 s", "0.05 s").replace("11-28 01:07", "12-02 06:14")
    readme.write_text(readme.read_text().replace(OLD_ROW, f"{OLD_ROW}\n{newer}"))
    report.write(_run(), [_figure()], [], readme=True)
    text = readme.read_text()
    assert newer in text and OLD_ROW not in text

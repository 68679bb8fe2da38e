"""Figures and how they are written: bench/results/latest.json, bench/results/latest.md
(one table row per figure), and the same table in bench/README.md between markers."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
START_MARK = "<!-- bench:latest:start -->"
END_MARK = "<!-- bench:latest:end -->"


@dataclass
class Figure:
    """One row: the agent's number against a reference measured in the same run.
    Lower is better for every figure here; the target is a bound on agent/reference."""

    key: str
    title: str
    agent_s: float
    reference_s: float
    reference_label: str
    target_max: float
    command: str
    strict: bool = False  # target is "< max" rather than "<= max"
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load when it started, ended

    @property
    def ratio(self) -> float:
        return self.agent_s / self.reference_s

    @property
    def target(self) -> str:
        return f"{'<' if self.strict else '≤'} {self.target_max:g}"

    @property
    def met(self) -> bool:
        return self.ratio < self.target_max if self.strict else self.ratio <= self.target_max

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 3), "target": self.target,
                "target_met": self.met}


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def markdown(run: dict[str, Any], figures: list[Figure], errors: list[str]) -> str:
    m = run["machine"]
    lines = [
        f"Run {run['started_at']} ({run['duration_s']:.0f} s): {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['mem_gib']} GiB, virt type **{m['virt_type']}** ({m['virt_reason']}); "
        f"load average (1/5/15 min) **{_load(m['load_average_start'])}** at start, "
        f"**{_load(run['load_average_end'])}** at end; {m['qemu_processes_at_start']} "
        f"qemu processes running at start. {m['qemu']}, libvirt {m['libvirt']}, "
        f"libguestfs {m['libguestfs']}.",
        "",
        "| Figure | Agent | Reference | Ratio | Target | Load (1 min) | Reproduce |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        verdict = "met" if f.met else "**missed**"
        lines.append(f"| {f.title} | {f.agent_s:.2f} s | {f.reference_s:.2f} s ({f.reference_label}) "
                     f"| {f.ratio:.2f} | {f.target} ({verdict}) "
                     f"| {f.load_average[0]:.1f} → {f.load_average[1]:.1f} | `{f.command}` |")
    notes = [(f.title, n) for f in figures for n in f.notes]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- *{title}*: {note}" for title, note in notes]
    if errors:
        lines += ["", "Figures that failed to run:", ""]
        lines += [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def write(run: dict[str, Any], figures: list[Figure], errors: list[str], *,
          readme: bool) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    data = {**run, "figures": [f.as_json() for f in figures], "errors": errors}
    (RESULTS_DIR / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    table = markdown(run, figures, errors)
    md = RESULTS_DIR / "latest.md"
    md.write_text("# Latest benchmark run\n\n" + table)
    if readme:
        update_readme(table)
    return md


def update_readme(table: str) -> None:
    text = README.read_text()
    if START_MARK not in text or END_MARK not in text:
        return
    head, rest = text.split(START_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    README.write_text(f"{head}{START_MARK}\n{table}{END_MARK}{tail}")

"""Figures and how they are written: bench/results/latest.json, bench/results/latest.md
(one table row per figure), and the same table in bench/README.md between markers.

A run that measures some figures only replaces those rows: the others are kept from
latest.json as they were, each row dated by the run that measured it."""

from __future__ import annotations

import json
import re
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
    """One row: the agent's number against a reference measured in the same run (or a
    stated constant). `agent_s` and `reference_s` are in `unit` (seconds unless said; the
    names stay for the JSON's readers). Lower is better unless `higher_is_better`.
    The target bounds agent/reference, or the agent's own number when `target_on_agent`;
    None when the issue sets no target (the row is then for information)."""

    key: str
    title: str
    agent_s: float
    reference_s: float
    reference_label: str
    target_max: float | None
    command: str
    strict: bool = False  # target is "< max" rather than "<= max"
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load when it started, ended
    unit: str = "s"
    target_on_agent: bool = False
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        return self.agent_s / self.reference_s

    @property
    def target(self) -> str:
        if self.target_max is None:
            return "none set"
        signs = (">", "≥") if self.higher_is_better else ("<", "≤")
        sign = signs[0] if self.strict else signs[1]
        if self.target_on_agent:
            return f"{sign} {self.target_max:g} {self.unit}"
        return f"{sign} {self.target_max:g}"

    @property
    def met(self) -> bool | None:
        if self.target_max is None:
            return None
        value = self.agent_s if self.target_on_agent else self.ratio
        if self.higher_is_better:
            return value > self.target_max if self.strict else value >= self.target_max
        return value < self.target_max if self.strict else value <= self.target_max

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 3), "target": self.target,
                "target_met": self.met}


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.1f} {unit}"


def _order(row: dict[str, Any]) -> int:
    """Rows by figure number (the title starts with it); a stable sort keeps the order
    in which a figure's rows were made."""
    m = re.match(r"(\d+)", row["title"])
    return int(m.group(1)) if m else 99


def _verdict(row: dict[str, Any]) -> str:
    met = row.get("target_met")
    if met is None:
        return row["target"]
    return f"{row['target']} ({'met' if met else '**missed**'})"


def markdown(run: dict[str, Any], rows: list[dict[str, Any]], errors: list[str]) -> str:
    m = run["machine"]
    lines = [
        f"Latest run {run['started_at']} ({run['duration_s']:.0f} s): {m['nproc']} CPUs "
        f"({m['cpu']}), {m['mem_gib']} GiB, virt type **{m['virt_type']}** ({m['virt_reason']}); "
        f"load average (1/5/15 min) **{_load(m['load_average_start'])}** at start, "
        f"**{_load(run['load_average_end'])}** at end; {m['qemu_processes_at_start']} "
        f"qemu processes running at start. {m['qemu']}, libvirt {m['libvirt']}, "
        f"libguestfs {m['libguestfs']}. Each row gives the run that measured it (UTC); a run "
        "of some figures keeps the other rows from earlier runs.",
        "",
        "| Figure | Agent | Reference | Ratio | Target | Load (1 min) | Run | Reproduce |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        if "raw_line" in f:  # kept as the README had it
            lines.append(f["raw_line"])
            continue
        unit = f.get("unit", "s")
        load = f.get("load_average") or (0.0, 0.0)
        when = str(f.get("run_started_at", run["started_at"]))[5:16].replace("T", " ")
        lines.append(f"| {f['title']} | {_value(f['agent_s'], unit)} "
                     f"| {_value(f['reference_s'], unit)} ({f['reference_label']}) "
                     f"| {f['ratio']:.2f} | {_verdict(f)} "
                     f"| {load[0]:.1f} → {load[1]:.1f} | {when} | `{f['command']}` |")
    notes = [(f["title"], n) for f in rows for n in f.get("notes", f.get("raw_notes", []))]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- *{title}*: {note}" for title, note in notes]
    if errors:
        lines += ["", "Figures that failed to run (this run):", ""]
        lines += [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def _earlier_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of the previous latest.json, each dated by its run; [] if none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    rows = data.get("figures", []) if isinstance(data, dict) else []
    for row in rows:
        row.setdefault("run_started_at", data.get("started_at", ""))
    return [r for r in rows if isinstance(r, dict) and "key" in r and "title" in r]


def _figure_name(command: str) -> str:
    """The figure a row's command runs (`... -m bench NAME --opts`): a run of it makes all
    of that figure's rows, whatever their titles say now."""
    words = command.split()
    return words[words.index("bench") + 1] if "bench" in words[:-1] else command


def _readme_rows(text: str) -> list[dict[str, Any]]:
    """The rows of the table in bench/README.md, kept as written (line and notes): what a
    checkout without bench/results (ignored by git) knows of earlier runs."""
    if START_MARK not in text or END_MARK not in text:
        return []
    table = text.split(START_MARK, 1)[1].split(END_MARK, 1)[0]
    rows: dict[str, dict[str, Any]] = {}
    for line in table.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) >= 8 and not line.startswith("| Figure |"):
            title = cells[0].removeprefix("| ")
            run = cells[6]  # "MM-DD HH:MM": of two rows of one title, the newer is kept
            if title not in rows or run > rows[title]["readme_run"]:
                rows[title] = {"key": f"readme:{title}", "title": title, "raw_line": line,
                               "command": cells[-1].strip(" |`"), "raw_notes": [],
                               "readme_run": run}
        elif line.startswith("- *") and "*: " in line:
            title, note = line.removeprefix("- *").split("*: ", 1)
            if title in rows:
                rows[title]["raw_notes"].append(note)
    return list(rows.values())


def write(run: dict[str, Any], figures: list[Figure], errors: list[str], *,
          readme: bool) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    latest = RESULTS_DIR / "latest.json"
    fresh = [{**f.as_json(), "run_started_at": run["started_at"]} for f in figures]
    fresh_keys = {r["key"] for r in fresh}
    earlier = _earlier_rows(latest)
    known = {r["title"] for r in earlier + fresh}
    measured = {_figure_name(r.get("command", "")) for r in earlier + fresh}
    if readme and README.exists():  # rows only the README still has (no latest.json here)
        earlier += [r for r in _readme_rows(README.read_text()) if r["title"] not in known
                    and _figure_name(r["command"]) not in measured]
    # A run of a figure makes all of its rows: its older ones go, even those carried from
    # the README into latest.json by an earlier run of another figure.
    fresh_figures = {_figure_name(r.get("command", "")) for r in fresh}
    kept = [r for r in earlier if r["key"] not in fresh_keys
            and _figure_name(r.get("command", "")) not in fresh_figures]
    rows = sorted(kept + fresh, key=_order)
    data = {**run, "figures": rows, "errors": errors}
    latest.write_text(json.dumps(data, indent=2) + "\n")
    table = markdown(run, rows, errors)
    md = RESULTS_DIR / "latest.md"
    md.write_text("# Latest benchmark results\n\n" + table)
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

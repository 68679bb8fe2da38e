"""`doctor`: run host checks, one line each, and decide whether the host can provision."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydantic import BaseModel

from agent.model.host import CheckResult

Check = tuple[str, Callable[[], CheckResult]]


class DoctorReport(BaseModel):
    results: list[CheckResult]

    @property
    def can_provision(self) -> bool:
        return all(r.ok for r in self.results if r.required)

    def lines(self) -> list[str]:
        out = []
        for r in self.results:
            mark = "ok  " if r.ok else ("FAIL" if r.required else "warn")
            line = f"[{mark}] {r.name}: {r.detail}"
            if not r.ok and r.fix:
                line += f"\n       fix: {r.fix}"
            out.append(line)
        verdict = "host can provision servers" if self.can_provision else "host CANNOT provision servers"
        out.append(verdict)
        return out


def run_checks(checks: Iterable[Check]) -> DoctorReport:
    """Run every check; a check that raises is reported as failed, never aborts the rest."""
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as e:  # a broken check is a finding, not a crash
            results.append(CheckResult(name=name, ok=False, detail=f"check crashed: {e!r}",
                                       fix="report this as a bug in compute-agent"))
    return DoctorReport(results=results)

"""doctor reports every check, survives a crashing one, and says whether we can provision."""

from agent.core.doctor import run_checks
from agent.model.host import CheckResult


def ok(name):
    return (name, lambda: CheckResult(name=name, ok=True, detail="fine"))


def test_all_ok_means_host_can_provision():
    report = run_checks([ok("a"), ok("b")])
    assert report.can_provision
    assert report.lines()[-1] == "host can provision servers"


def test_a_crashing_check_is_a_failure_and_the_rest_still_run():
    def boom():
        raise RuntimeError("kaput")

    report = run_checks([("x", boom), ok("b")])
    assert not report.can_provision
    assert [r.name for r in report.results] == ["x", "b"]
    assert "kaput" in report.results[0].detail


def test_failed_check_prints_its_fix():
    bad = ("qemu-img", lambda: CheckResult(name="qemu-img", ok=False, detail="missing",
                                           fix="apt-get install qemu-utils"))
    lines = run_checks([bad]).lines()
    assert "[FAIL] qemu-img: missing" in lines[0]
    assert "fix: apt-get install qemu-utils" in lines[0]
    assert "CANNOT" in lines[-1]


def test_optional_failure_warns_but_does_not_block():
    warn = ("w", lambda: CheckResult(name="w", ok=False, detail="meh", required=False))
    report = run_checks([warn, ok("a")])
    assert report.can_provision
    assert report.lines()[0].startswith("[warn]")

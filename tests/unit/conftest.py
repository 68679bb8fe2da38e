"""Unit tests run in milliseconds and touch nothing outside the process: any attempt to
start a subprocess fails the test (as in ironic-python-agent). The one exception is marked
`runs_linter`: a test of the project's own lint configuration, which can only run the tool."""

import subprocess

import pytest


class SubprocessBlocked(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _block_subprocess(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("runs_linter"):
        return

    def refuse(*args, **kwargs):
        raise SubprocessBlocked(f"unit tests may not run subprocesses: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)

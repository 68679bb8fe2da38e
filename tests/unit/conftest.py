"""Unit tests run in milliseconds and touch nothing outside the process: any attempt to
start a subprocess fails the test (as in ironic-python-agent)."""

import subprocess

import pytest


class SubprocessBlocked(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _block_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise SubprocessBlocked(f"unit tests may not run subprocesses: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)

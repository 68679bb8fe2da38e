"""Composition root: the one place that picks concrete adapters and wires them in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.adapters.host_checks import host_checks
from agent.config import Config, load_config
from agent.core.doctor import DoctorReport, run_checks
from agent.log import configure_logging


def make_config(config_file: Path | None, overrides: dict[str, Any]) -> Config:
    config = load_config(config_file, overrides)
    configure_logging(config.log_level, config.log_format)
    return config


def doctor(config: Config, *, guestfs: bool = True) -> DoctorReport:
    return run_checks(host_checks(config, guestfs=guestfs))

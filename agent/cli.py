"""Command line. Parses arguments and hands over to the composition root; no logic here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import __version__
from agent.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compute-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"compute-agent {__version__}")
    p.add_argument("--config", type=Path, help="TOML config file (default /etc/compute-agent/agent.toml)")
    p.add_argument("--state-dir", type=Path, help="put all state (db, socket, disks) under this folder")
    p.add_argument("--image-dir", type=Path, action="append", dest="image_dirs",
                   help="folder of image manifests (repeatable)")
    p.add_argument("--libvirt-uri")
    p.add_argument("--virt-type", choices=["auto", "kvm", "qemu"])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check that this host can provision servers")
    d.add_argument("--no-guestfs", action="store_true",
                   help="skip the libguestfs appliance launch (slow under TCG)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from agent import app  # the composition root: imported late so --help stays fast

    overrides = {"state_dir": args.state_dir, "image_dirs": args.image_dirs,
                 "libvirt_uri": args.libvirt_uri, "virt_type": args.virt_type}
    try:
        config = app.make_config(args.config, overrides)
    except ConfigError as e:
        print(f"compute-agent: {e}", file=sys.stderr)
        return 2
    if args.command == "doctor":
        report = app.doctor(config, guestfs=not args.no_guestfs)
        print("\n".join(report.lines()))
        return 0 if report.can_provision else 1
    return 2

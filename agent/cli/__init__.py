"""Command line. Parses arguments and hands over to the composition root or to the
running daemon's API; no logic here."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from agent import __version__
from agent.cli import images, keypairs, servers
from agent.cli.client import AgentClient, ApiError
from agent.errors import AgentError, ConfigError, StateDirLocked


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compute-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"compute-agent {__version__}")
    p.add_argument("--config", type=Path,
                   help="TOML config file (default /etc/compute-agent/agent.toml)")
    p.add_argument("--state-dir", type=Path,
                   help="put all state (database, socket, guest disks) under this folder")
    p.add_argument("--image-dir", type=Path, action="append", dest="image_dirs",
                   help="folder of image manifests (repeatable)")
    p.add_argument("--libvirt-uri")
    p.add_argument("--virt-type", choices=["auto", "kvm", "qemu"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check that this host can provision servers")
    d.add_argument("--no-guestfs", action="store_true",
                   help="skip the libguestfs appliance launch (slow under TCG)")
    for parent in (sub, sub.add_parser(
            "controller", help="the fleet's controller (one Compute API for many hosts)"
            ).add_subparsers(dest="action", required=True)):
        sv = parent.add_parser("serve", help="run the daemon in the foreground")
        sv.add_argument("--listen", dest="api_listen", help="also serve the API on HOST:PORT")
        sv.add_argument("--socket", dest="api_socket", type=Path, help="the API's unix socket")
    servers.add_parser(sub)
    keypairs.add_parser(sub)
    images.add_parser(sub)
    return p


def _without_rich() -> None:
    """structlog's dev renderer imports rich whenever it is installed (the test extra
    brings it: import-linter, schemathesis), ~50 modules and 3.5 MiB the daemon never
    uses: its log lines and tracebacks are plain text. Marked absent for the daemon's
    process before structlog is first imported, on the path both entry points take
    (`python -m agent` and the `compute-agent` script the systemd unit runs)."""
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        _without_rich()
    from agent import app  # the composition root: imported late so --help stays fast

    overrides = {"state_dir": args.state_dir, "image_dirs": args.image_dirs,
                 "libvirt_uri": args.libvirt_uri, "virt_type": args.virt_type,
                 "log_level": args.log_level, "log_format": args.log_format,
                 "api_listen": getattr(args, "api_listen", None),
                 "api_socket": getattr(args, "api_socket", None)}
    try:
        config = app.make_config(args.config, overrides)
    except ConfigError as e:
        print(f"compute-agent: {e}", file=sys.stderr)
        return 2
    if args.command == "doctor":
        report = app.doctor(config, guestfs=not args.no_guestfs)
        print("\n".join(report.lines()))
        return 0 if report.can_provision else 1
    if args.command == "serve" or (args.command == "controller" and args.action == "serve"):
        serve = app.serve if args.command == "serve" else app.serve_controller
        try:
            return asyncio.run(serve(config, lambda: app.make_config(args.config, overrides)))
        except ConfigError as e:
            print(f"compute-agent: {e}", file=sys.stderr)
            return 2
        except StateDirLocked as e:
            print(f"compute-agent: {e}", file=sys.stderr)
            return 1
    if args.command == "image" and args.action == "import":
        try:
            image = app.import_image(config, Path(args.file), args.name,
                                     images.import_properties(args), args.min_ram,
                                     images.declared_format(args.file, args.disk_format))
        except AgentError as e:
            print(f"compute-agent: image import refused: {e}", file=sys.stderr)
            return 1
        print(f"imported {image.name}: id {image.uuid}, {image.disk_format}, "
              f"min_disk {image.min_disk} GiB, {image.disk_file}")
        return 0
    if args.command in ("server", "keypair", "image"):
        client = AgentClient(None if args.url else (args.socket or str(config.socket_path)),
                             url=args.url, token=args.token or os.environ.get("COMPUTE_AGENT_TOKEN"))
        try:
            if args.command == "image":
                return images.run_remote(args, client)
            return (servers if args.command == "server" else keypairs).run(args, client)
        except ApiError as e:
            print(f"compute-agent: {e}", file=sys.stderr)
            return 1
        finally:
            client.close()
    return 2

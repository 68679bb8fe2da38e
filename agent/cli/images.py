"""`compute-agent image ...`: import a disk file into this host's image catalog (locally:
it writes the first image folder, so it runs as root on the host), list and delete
images through the running daemon (delete is refused while a server uses the image)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.client import AgentClient
from agent.cli.servers import pairs, print_table

LIST_COLUMNS = ("id", "name", "status", "size", "minDisk", "minRam")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="the host's image catalog")
    p.add_argument("--socket", help="the daemon's API socket (default from the config)")
    p.add_argument("--url", help="an API base URL instead of the socket")
    p.add_argument("--token", help="X-Auth-Token (default: $COMPUTE_AGENT_TOKEN)")
    s = p.add_subparsers(dest="action", required=True)
    i = s.add_parser("import", help="check a disk file (raw or qcow2) and add it")
    i.add_argument("file")
    i.add_argument("--name", required=True)
    i.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                   help="image property, e.g. hw_qemu_guest_agent=yes (repeatable)")
    i.add_argument("--min-ram", type=int, default=0, help="MiB")
    i.add_argument("--disk-format", choices=["raw", "qcow2"],
                   help="what the file claims to be; refused if its content differs "
                        "(default: a .raw or .qcow2 suffix, else whatever it is)")
    s.add_parser("list")
    d = s.add_parser("delete")
    d.add_argument("id")


def declared_format(file: str, option: str | None) -> str | None:
    if option:
        return option
    for fmt in ("raw", "qcow2"):
        if file.endswith(f".{fmt}"):
            return fmt
    return None


def print_image(image: dict[str, Any]) -> None:
    for key in sorted(image):
        if key != "links":
            print(f"{key:24} {image[key]}")


def run_remote(args: argparse.Namespace, client: AgentClient) -> int:
    if args.action == "list":
        images = client.request("GET", "/images/detail")["images"]
        print_table([{"id": i["id"], "name": i["name"], "status": i["status"],
                      "size": str(i.get("OS-EXT-IMG-SIZE:size", "")),
                      "minDisk": str(i["minDisk"]), "minRam": str(i["minRam"])}
                     for i in images], LIST_COLUMNS)
    elif args.action == "delete":
        client.request("DELETE", f"/images/{args.id}")
        print(f"deleted {args.id}")
    return 0


def import_properties(args: argparse.Namespace) -> dict[str, str]:
    return pairs(args.property)

"""`compute-agent keypair ...`: the caller's SSH keypairs through the running daemon."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.client import AgentClient, add_connection_args
from agent.cli.servers import print_detail, print_table

LIST_COLUMNS = ("name", "fingerprint")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keypair", help="your SSH keypairs, for servers' --key-name")
    add_connection_args(p)
    s = p.add_subparsers(dest="action", required=True)
    c = s.add_parser("create", help="make a key (its private key is printed, once) or import one")
    c.add_argument("name")
    c.add_argument("--public-key", type=Path, metavar="FILE",
                   help="import this OpenSSH public key file instead of making a key")
    s.add_parser("list")
    for name in ("show", "delete"):
        s.add_parser(name).add_argument("name")


def run(args: argparse.Namespace, client: AgentClient) -> int:
    if args.action == "create":
        body = {"name": args.name}
        if args.public_key is not None:
            body["public_key"] = args.public_key.read_text()
        created = client.request("POST", "/os-keypairs", {"keypair": body})["keypair"]
        # As `openstack keypair create` does: a made key's private key alone goes to stdout
        # (to redirect into a file); an imported key's fingerprint.
        print(created.get("private_key") or created["fingerprint"], end="")
        if "private_key" not in created:
            print()
    elif args.action == "list":
        keypairs = client.request("GET", "/os-keypairs")["keypairs"]
        print_table([{c: k["keypair"][c] for c in LIST_COLUMNS} for k in keypairs], LIST_COLUMNS)
    elif args.action == "show":
        print_detail(client.request("GET", f"/os-keypairs/{args.name}")["keypair"])
    elif args.action == "delete":
        client.request("DELETE", f"/os-keypairs/{args.name}")
    return 0

"""`compute-agent server ...`: act on servers through the running daemon."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agent.cli.client import AgentClient, ApiError, add_connection_args

LIST_COLUMNS = ("id", "name", "status", "progress", "image", "flavor")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="act on servers through the running daemon")
    add_connection_args(p)
    s = p.add_subparsers(dest="action", required=True)
    c = s.add_parser("create")
    c.add_argument("name")
    c.add_argument("--image", required=True)
    c.add_argument("--flavor", required=True)
    c.add_argument("--admin-pass", help="(prefer the generated one: argv is visible to others)")
    c.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--access-ipv4")
    c.add_argument("--access-ipv6")
    c.add_argument("--key-name", help="a keypair of yours (compute-agent keypair) for root's "
                   "authorized_keys")
    c.add_argument("--wait", action="store_true", help="show progress until the build ends")
    s.add_parser("list").add_argument("--all-projects", action="store_true",
                                      help="every project's servers (admin tokens only)")
    for name in ("show", "delete"):
        x = s.add_parser(name)
        x.add_argument("id")
        if name == "delete":
            x.add_argument("--wait", action="store_true")
    con = s.add_parser("console", help="attach this terminal to the guest's serial console "
                                       "(Ctrl-] to leave)")
    con.add_argument("id")
    st = s.add_parser("set")
    st.add_argument("id")
    st.add_argument("--name")
    st.add_argument("--access-ipv4")
    st.add_argument("--access-ipv6")
    st.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")


def pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"compute-agent: --property wants KEY=VALUE, not {item!r}")
        out[key] = value
    return out


def _row(server: dict[str, Any]) -> dict[str, str]:
    return {"id": server["id"], "name": server["name"], "status": server["status"],
            "progress": str(server.get("progress", "")), "image": server["image"]["id"],
            "flavor": server["flavor"]["id"]}


def print_table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in columns))


def print_detail(server: dict[str, Any]) -> None:
    for key in sorted(server):
        if key != "links":
            print(f"{key:36} {server[key]}")


def _bar(progress: int, status: str, width: int = 30) -> str:
    done = width * progress // 100
    return f"\r[{'#' * done}{'.' * (width - done)}] {progress:3d}% {status:<12}"


def wait_for(client: AgentClient, server_id: str, until: set[str], timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    status, shown = "?", None
    while time.monotonic() < deadline:
        try:
            server = client.get_server(server_id)
        except ApiError as e:
            if e.status == 404 and "DELETED" in until:
                status = "DELETED"
                break
            raise
        status = server["status"]
        bar = _bar(int(server.get("progress") or 0), status)
        if bar != shown:  # redraw only on change, so a log of it stays short
            sys.stdout.write(bar)
            sys.stdout.flush()
            shown = bar
        if status in until:
            break
        time.sleep(0.5)
    sys.stdout.write("\n")
    return status


def run(args: argparse.Namespace, client: AgentClient) -> int:
    if args.action == "create":
        body: dict[str, Any] = {"name": args.name, "imageRef": args.image, "flavorRef": args.flavor}
        if args.admin_pass:
            body["adminPass"] = args.admin_pass
        if args.property:
            body["metadata"] = pairs(args.property)
        for key, value in (("accessIPv4", args.access_ipv4), ("accessIPv6", args.access_ipv6),
                           ("key_name", args.key_name)):
            if value:
                body[key] = value
        created = client.create_server(body)
        print(f"id         {created['id']}")
        print(f"adminPass  {created['adminPass']}  (shown once)")
        if args.wait:
            status = wait_for(client, created["id"], {"ACTIVE", "ERROR"})
            print_detail(client.get_server(created["id"]))
            return 0 if status == "ACTIVE" else 1
    elif args.action == "list":
        params = {"all_tenants": "1"} if args.all_projects else {}
        print_table([_row(s) for s in client.list_servers(**params)], LIST_COLUMNS)
    elif args.action == "show":
        print_detail(client.get_server(args.id))
    elif args.action == "delete":
        client.delete_server(args.id)
        if args.wait:
            wait_for(client, args.id, {"DELETED", "ERROR"})
    elif args.action == "console":
        client.get_server(args.id)  # 404 for another project's server, before attaching
        # Here, not at the top: `python -m agent serve` goes through this package, and the
        # daemon need not hold the websockets client (~1 MiB) for a command it never runs.
        from agent.cli import console
        return console.attach(console.open_console(args.id, client.socket_path, args.url,
                                                   client.token))
    elif args.action == "set":
        changes = {k: v for k, v in (("name", args.name), ("accessIPv4", args.access_ipv4),
                                     ("accessIPv6", args.access_ipv6)) if v is not None}
        if changes:
            client.update_server(args.id, changes)
        if args.property:
            client.set_metadata(args.id, pairs(args.property))
        print_detail(client.get_server(args.id))
    return 0

"""`python -m bench [injection|batch|provisioning|shutoff|api|memory|load|abuse|fleet-builds ...]`: run the
figures (all by default), merge them into bench/results/latest.json and latest.md (rows of
figures not run are kept from earlier runs) and the table in bench/README.md.
Exits 1 only when a figure could not run, never for a slow number."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from bench import (
    abuse,
    api_latency,
    broker_restart,
    debian_boot,
    fleet_api,
    fleet_broker,
    fleet_builds,
    injection,
    memory,
    provisioning,
    shutoff,
)
from bench.context import Context, load_average, make_context
from bench.report import Figure, progress, write
from bench.scratch import Scratch, sigterm_as_interrupt

PY = ".venv/bin/python -m bench"


def _command(name: str, args: argparse.Namespace) -> str:
    """The exact command that reproduces one figure with this run's settings."""
    opts = {
        "injection": f"--runs {args.runs}",
        "batch": f"--batch-size {args.batch_size} --batch-runs {args.batch_runs} "
                 f"--server-runs {args.server_runs} --runs {args.runs}",
        "provisioning": f"--provision-runs {args.provision_runs}",
        "shutoff": f"--shutoff-runs {args.shutoff_runs}",
        "api": f"--api-requests {args.api_requests} --rps-seconds {args.rps_seconds:g}",
        "memory": f"--reconcile-domains {args.reconcile_domains}",
        "load": f"--load-seconds {args.load_seconds:g} "
                f"--load-reference-seconds {args.load_reference_seconds:g}",
        "abuse": f"--abuse-seconds {args.abuse_seconds:g}",
        "debian": "",
        "broker": "",
        "fleet-builds": "",
        "fleet-shutoff": f"--shutoff-runs {args.shutoff_runs}",
        "fleet-broker": "",
        "fleet-api": f"--api-requests {args.api_requests}",
    }[name]
    return f"{PY} {name} {opts}".rstrip()


def _injection(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return injection.injection(ctx, args.runs, _command("injection", args))


def _batch(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    cmd = _command("batch", args)
    return [injection.batch_injection(ctx, args.batch_size, args.batch_runs, args.runs, cmd),
            provisioning.batch_servers(ctx, args.batch_size, args.batch_runs,
                                       args.server_runs, cmd)]


def _provisioning(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return provisioning.provisioning(ctx, args.provision_runs, _command("provisioning", args))


def _shutoff(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return shutoff.shutoff(ctx, args.shutoff_runs, _command("shutoff", args))


def _api(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return api_latency.api_reads(ctx, args.api_requests, args.rps_seconds, _command("api", args))


def _memory(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return memory.memory(ctx, args.reconcile_domains, _command("memory", args))


def _load(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return api_latency.api_load(ctx, args.load_seconds, args.load_reference_seconds,
                                _command("load", args))


def _abuse(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return abuse.abuse(ctx, args.abuse_seconds, _command("abuse", args))


def _debian(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return debian_boot.debian_boot(ctx, _command("debian", args))


def _broker(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return broker_restart.broker_restart(ctx, _command("broker", args))


def _fleet_builds(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return fleet_builds.fleet_builds(ctx, _command("fleet-builds", args))


def _fleet_shutoff(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return fleet_builds.fleet_shutoff(ctx, args.shutoff_runs, _command("fleet-shutoff", args))


def _fleet_broker(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return fleet_broker.fleet_broker(ctx, _command("fleet-broker", args))


def _fleet_api(ctx: Context, args: argparse.Namespace) -> list[Figure]:
    return fleet_api.fleet_api(ctx, args.api_requests, _command("fleet-api", args))


FIGURES: dict[str, Callable[[Context, argparse.Namespace], list[Figure]]] = {
    "injection": _injection,
    "batch": _batch,
    "provisioning": _provisioning,
    "shutoff": _shutoff,
    "api": _api,
    "memory": _memory,
    "load": _load,
    "abuse": _abuse,
    "debian": _debian,
    "broker": _broker,
    "fleet-builds": _fleet_builds,
    "fleet-shutoff": _fleet_shutoff,
    "fleet-broker": _fleet_broker,
    "fleet-api": _fleet_api,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("figures", nargs="*", metavar="FIGURE",
                   help=f"any of {', '.join(FIGURES)} (default: all)")
    p.add_argument("--runs", type=int, default=3,
                   help="runs of each injection (figure 2, and 3a's single disk when run alone)")
    p.add_argument("--provision-runs", type=int, default=5, help="runs of figure 1")
    p.add_argument("--batch-size", type=int, default=8, help="disks / servers in figure 3")
    p.add_argument("--batch-runs", type=int, default=1, help="runs of each batch in figure 3")
    p.add_argument("--server-runs", type=int, default=3,
                   help="runs of the single server that figure 3b compares with")
    p.add_argument("--shutoff-runs", type=int, default=10,
                   help="guest power-offs timed in figures 4 and 12")
    p.add_argument("--api-requests", type=int, default=100,
                   help="GET /servers/detail timed in figures 5 and 14 (each, agent and reference)")
    p.add_argument("--rps-seconds", type=float, default=15,
                   help="seconds of 20 clients in figure 5 (each, agent and reference)")
    p.add_argument("--reconcile-domains", type=int, default=200,
                   help="servers and test-driver domains in figure 6's start-up reconcile")
    p.add_argument("--load-seconds", type=float, default=60, help="seconds of load in figure 7")
    p.add_argument("--load-reference-seconds", type=float, default=20,
                   help="seconds of figure 7's read-only reference")
    p.add_argument("--abuse-seconds", type=float, default=20,
                   help="seconds of figure 8's client alone, then as long under abuse")
    p.add_argument("--no-readme", action="store_true",
                   help="do not copy the table into bench/README.md")
    args = p.parse_args(argv)
    unknown = [f for f in args.figures if f not in FIGURES]
    if unknown:
        p.error(f"unknown figure {unknown[0]!r}: choose from {', '.join(FIGURES)}")
    if not 1 <= args.batch_size <= 10:
        p.error("--batch-size must be 1..10 (the default quota is 10 instances)")
    for name in ("runs", "provision_runs", "batch_runs", "server_runs", "shutoff_runs",
                 "api_requests", "reconcile_domains"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("rps_seconds", "load_seconds", "load_reference_seconds", "abuse_seconds"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be more than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    selected = args.figures or list(FIGURES)
    selected = [name for name in FIGURES if name in selected]  # the order that shares numbers
    sigterm_as_interrupt()
    scratch = Scratch()
    started_wall, started = datetime.now(UTC), time.monotonic()
    figures: list[Figure] = []
    errors: list[str] = []
    try:
        ctx = make_context(scratch)
        m = ctx.machine
        progress(f"{m['nproc']} CPUs, virt type {m['virt_type']}, load average "
                 f"{m['load_average_start']}, {m['qemu_processes_at_start']} qemu processes running")
        for name in selected:
            load_before = load_average()
            progress(f"figure {name}, load average {load_before}")
            try:
                done = FIGURES[name](ctx, args)
            except Exception as e:  # one broken figure does not lose the others
                traceback.print_exc()
                errors.append(f"{name}: {type(e).__name__}: {e}")
                continue
            for f in done:
                f.load_average = (load_before[0], load_average()[0])
            figures += done
        run = {"started_at": started_wall.isoformat(timespec="seconds"),
               "duration_s": round(time.monotonic() - started, 1),
               "argv": sys.argv[1:], "machine": ctx.machine,
               "load_average_end": load_average()}
        md = write(run, figures, errors, readme=not args.no_readme)
        print(md.read_text())
    except KeyboardInterrupt:
        progress("interrupted: cleaning up")
        return 130
    finally:
        scratch.cleanup()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

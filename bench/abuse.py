"""Figure 8: a polling client's latency while the TCP listener is abused.

The real daemon with its default [http] limits and a server named "a" * 40 + "!" in the
bench project. A well-behaved client (from 127.0.0.2) GETs /flavors, /servers and
/servers/detail in turn, pausing 50 ms after each answer, for `seconds` alone (the
reference), then for `seconds` while tests/support/abuse.py's hostile workers run from
other addresses: 1,000 idle connections reopened as they are closed, 4 endless request
lines, 2 endless headers, 5 heads trickled a byte at a time, and a tenant (127.0.0.3)
listing with catastrophic-backtracking name patterns. p99 of the client, and the
daemon's largest RSS (sampled every 0.1 s)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.context import Context
from bench.daemon import BenchDaemon
from bench.report import Figure, progress
from bench.seeded import PROJECT, wait_ready
from bench.timing import median, p99, summary
from tests.support.abuse import (
    Answers,
    RssSampler,
    idle_connections,
    polling_client,
    raise_fd_limit,
    regex_tenant,
    rss_mib,
    seed_evil_server,
    slow_head,
    stream_head,
)

PATHS = ("/v2.1/flavors", "/v2.1/servers", "/v2.1/servers/detail")
IDLE = 1000
MIB = 1024 * 1024


ROUND_PAUSE_S = 0.01  # between a worker's rounds: the load generator shares the daemon's CPUs


def _repeat(stop: threading.Event, work: Callable[[], Any]) -> Counter[str]:
    """Run `work` again and again (a short pause between rounds) until `stop`; how each
    round ended."""
    out: Counter[str] = Counter()
    while not stop.wait(ROUND_PAUSE_S):
        result = work()
        status = getattr(result, "status", result)
        if hasattr(result, "answered"):  # an idle round: refusals by status
            out.update({str(k): v for k, v in result.answered.items()})
        else:
            out[str(status)] += 1
    return out


def _timer(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


def abuse(ctx: Context, seconds: float, command: str) -> list[Figure]:
    raise_fd_limit(4 * IDLE)
    daemon = BenchDaemon(ctx.scratch, "abuse")
    seed_evil_server(daemon.state_dir / "agent.db", PROJECT)
    with daemon:
        wait_ready(daemon)
        idle_rss = rss_mib(daemon.pid)
        progress(f"abuse: a polling client alone for {seconds:g} s")
        quiet = polling_client(daemon.url, daemon.token, _timer(seconds), PATHS)
        progress(f"abuse: the same client for {seconds:g} s under abuse")
        sampler = RssSampler(daemon.pid)
        sampler.start()
        stop = _timer(seconds)
        port = int(daemon.url.rsplit(":", 1)[1])
        hostile: dict[str, Callable[[], Any]] = {
            "idle": lambda: _repeat(stop, lambda: idle_connections(port, IDLE, wait_s=30)),
            **{f"url{i}": (lambda: _repeat(stop, lambda: stream_head(port, b"GET /", 32 * MIB)))
               for i in range(4)},
            **{f"header{i}": (lambda: _repeat(stop, lambda: stream_head(
                port, b"GET / HTTP/1.1\r\nX: ", 32 * MIB))) for i in range(2)},
            **{f"slow{i}": (lambda: _repeat(stop, lambda: slow_head(port, 0.3, 30)))
               for i in range(5)},
            "regex": lambda: regex_tenant(daemon.url, daemon.token, stop),
        }
        with ThreadPoolExecutor(len(hostile) + 1) as pool:
            client = pool.submit(polling_client, daemon.url, daemon.token, stop, PATHS)
            attacks = {name: pool.submit(run) for name, run in hostile.items()}
            busy: Answers = client.result()
            outcomes = {name: f.result() for name, f in attacks.items()}
        sampler.stop.set()
        sampler.join()
    got, ref = busy.latencies_ms, quiet.latencies_ms
    hostile_counts: Counter[str] = Counter()
    for name, counts in outcomes.items():
        kind = name.rstrip("0123456789")
        hostile_counts.update({f"{kind} {k}": v for k, v in counts.items()})
    progress(f"abuse: p99 {p99(got):.1f} ms under abuse vs {p99(ref):.1f} ms alone, "
             f"max RSS {sampler.max_mib:.0f} MiB")
    notes = [f"p50 {median(got):.1f} ms under abuse ({len(got)} answers: {dict(busy.statuses)}) vs "
             f"{median(ref):.1f} ms alone ({len(ref)}: {dict(quiet.statuses)}); hostile outcomes "
             f"(status or 'None' = closed without one): {dict(sorted(hostile_counts.items()))}; "
             "the client and every hostile worker share the daemon's 2 CPUs"]
    details = {"under_abuse_ms": summary(got), "alone_ms": summary(ref),
               "hostile": dict(hostile_counts), "rss_idle_mib": idle_rss,
               "rss_max_mib": sampler.max_mib}
    return [
        Figure(key="abuse-p99",
               title=f"8. Abuse: p99 of a polling client (GET, 50 ms pauses) while {IDLE} idle "
                     "connections, endless request lines and headers, trickled heads and "
                     f"backtracking name patterns hit the TCP listener, {seconds:g} s",
               agent_s=p99(got), reference_s=p99(ref),
               reference_label="the same client alone, just before",
               target_max=100, target_on_agent=True, strict=True, command=command, unit="ms",
               notes=notes, details=details),
        Figure(key="abuse-rss",
               title="8. Abuse: the daemon's largest RSS during it",
               agent_s=sampler.max_mib, reference_s=idle_rss,
               reference_label="its RSS when ready, before the abuse",
               target_max=150, target_on_agent=True, strict=True, command=command, unit="MiB"),
    ]

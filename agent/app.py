"""The process's entry points (agent/cli calls them): configuration, doctor, image import,
and the daemon's life: listeners, start-up, signals, sd_notify, shutdown. What the daemon
is made of is wired in agent/wiring.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from agent.adapters.folders import LocalFolders
from agent.adapters.guestfs_appliance import kill_stale_appliances
from agent.adapters.host_checks import host_checks
from agent.adapters.http_guard import guarded_protocol, websocket_protocol
from agent.adapters.image_catalog import WritableImageCatalog
from agent.adapters.libvirt_eventloop import install_event_loop
from agent.adapters.libvirt_events import LibvirtEventSource
from agent.adapters.libvirt_hypervisor import LibvirtHypervisor
from agent.adapters.listeners import connections_per_listener, tcp_listener, unix_listener
from agent.adapters.qemu_img import QemuImgInspector
from agent.adapters.sqlite_store import read_server_ids
from agent.adapters.state_lock import StateDirLock
from agent.adapters.systemd_notify import sd_notify, watchdog_interval
from agent.adapters.uvicorn_core import Config as ServerConfig
from agent.adapters.uvicorn_core import Server
from agent.config import Config, HttpLimits, load_config
from agent.core.doctor import DoctorReport, run_checks
from agent.core.image_import import import_image as import_into
from agent.core.recovery import quarantine_check, sweep
from agent.errors import AgentError
from agent.log import configure_logging
from agent.model.host import CheckResult
from agent.model.image import Image
from agent.model.requests import RequestContext
from agent.wiring import (
    build_agent,
    configure_webhooks,
    report_quarantine,
    warm_for_images,
)

log = structlog.get_logger("agent.app")

STOP_TIMEOUT_S = 20.0
STARTUP_RECONCILE_TIMEOUT_S = 30.0


def make_config(config_file: Path | None, overrides: dict[str, Any]) -> Config:
    config = load_config(config_file, overrides)
    configure_logging(config.log_level, config.log_format)
    return config


def doctor(config: Config, *, guestfs: bool = True) -> DoctorReport:
    return run_checks([*host_checks(config, guestfs=guestfs),
                       ("quarantine", lambda: _quarantine_check(config))])


def _quarantine_check(config: Config) -> CheckResult:
    """Domains and instance dirs of ours that the store does not know (see recovery)."""
    hypervisor = LibvirtHypervisor(config.libvirt_uri)
    try:
        return quarantine_check(read_server_ids(config.database_path), hypervisor,
                                LocalFolders(), config.instances_dir)
    except AgentError as e:  # libvirt down (its own line fails) or the store unreadable
        return CheckResult(name="quarantine", ok=False, required=False,
                           detail=f"cannot tell: {e}")
    finally:
        hypervisor.close()


def import_image(config: Config, source: Path, name: str, properties: dict[str, str],
                 min_ram: int = 0, disk_format: str | None = None) -> Image:
    """`compute-agent image import`: into the first image folder, which the daemon's
    catalog reads on every request (so no restart is needed)."""
    catalog = WritableImageCatalog(*config.image_dirs)
    return import_into(catalog, QemuImgInspector(), source, name, properties, min_ram,
                       disk_format)


class _Listener(Server):
    """One API listener; the daemon, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listener(app: Any, limits: HttpLimits) -> _Listener:
    """A listener with its own connection counts and bounds (agent/adapters/http_guard.py);
    WebSockets (only the serial console route serves one, its library loaded on the first)
    with small frames: keystrokes."""
    return _Listener(ServerConfig(app, log_config=None, access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=5, http=guarded_protocol(limits),
                                    ws=websocket_protocol, ws_max_size=64 * 1024, ws_max_queue=8,
                                    timeout_keep_alive=limits.keep_alive_s))


async def _watchdog(interval: float) -> None:
    while True:  # pings only while the event loop turns: a stuck loop gets restarted
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def _api_listeners(config: Config, make_api: Callable[[RequestContext | None], Any],
                   ) -> list[tuple[_Listener, Any]]:
    """The unix socket's listener (with the config's default context, if any) and the TCP
    one (api_listen), each with its share of the connection bound."""
    unix_ctx = (RequestContext(project_id=config.unix_socket_project, user_id="local")
                if config.unix_socket_project else None)
    limits = config.http.model_copy(update={"max_connections": connections_per_listener(
        config.http.max_connections, 2 if config.api_listen else 1)})
    listeners = [(_listener(make_api(unix_ctx), limits),
                  unix_listener(config.socket_path, config.api_socket_mode, config.api_socket_group))]
    if config.api_listen:
        listeners.append((_listener(make_api(None), limits), tcp_listener(config.api_listen)))
    return listeners


def _stop_on_signals(loop: asyncio.AbstractEventLoop, reload: Callable[[Callable[[], Config]], None],
                     reread: Callable[[], Config]) -> asyncio.Event:
    """SIGTERM/SIGINT set the returned event; SIGHUP reloads."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload, reread)
    return stop


async def _listening(listeners: list[tuple[_Listener, Any]], tasks: list[asyncio.Task[None]]) -> None:
    while not all(server.started for server, _ in listeners):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)


async def _ready_until_stopped(name: str, config: Config, listeners: list[tuple[_Listener, Any]],
                               stop: asyncio.Event, **ready: Any) -> asyncio.Task[None] | None:
    """Say ready (log, sd_notify, the watchdog's pings) and serve until SIGTERM/SIGINT;
    then say stopping and tell the listeners to finish. Returns the watchdog's task, to
    cancel once the rest has stopped."""
    # Start-up made ~100k long-lived objects (modules, routes, models): moved out of the
    # collector's generations, so full collections no longer walk them (a full pass over
    # them took tens of ms, and the API's requests paid it).
    gc.collect()
    gc.freeze()
    log.info(f"{name}.ready", socket=str(config.socket_path), tcp=config.api_listen, **ready)
    sd_notify("READY=1", "STATUS=serving")
    interval = watchdog_interval()
    watchdog = asyncio.create_task(_watchdog(interval)) if interval else None
    await stop.wait()
    log.info(f"{name}.stopping")
    sd_notify("STOPPING=1")
    for server, _ in listeners:
        server.should_exit = True
    return watchdog


async def serve(config: Config, reread: Callable[[], Config] | None = None) -> int:
    return await _locked(config, partial(_serve_locked, config, reread))


async def serve_controller(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """`compute-agent controller serve` (issue 12): the fleet's Compute API and its
    dispatcher and applier, with the agent's daemon life (lock, listeners, signals,
    sd_notify, watchdog). Its state dir is its own (the lock is the state dir's)."""
    return await _locked(config, partial(_serve_controller_locked, config, reread))


async def _serve_controller_locked(config: Config, reread: Callable[[], Config] | None) -> int:
    from agent.wiring_controller import build_controller  # aio-pika: loaded by a controller only

    loop = asyncio.get_running_loop()
    controller = build_controller(config)
    listeners = _api_listeners(config, controller.api)
    stop = _stop_on_signals(loop, controller.reload, reread or (lambda: config))
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in listeners]
    # The broker connects (and reconnects) in the background: the API serves meanwhile,
    # and the dispatcher's publishes wait for it. Unfinished jobs go out first thing.
    await controller.bus.start()
    await controller.bus.consume_fleet(controller.applier)
    configure_webhooks(controller.webhooks, config)  # each resumes from its durable cursor
    background = [asyncio.create_task(controller.dispatcher.run(), name="fleet-dispatcher")]
    await _listening(listeners, tasks)
    watchdog = await _ready_until_stopped("controller", config, listeners, stop,
                                          jobs_waiting=len(controller.store.unfinished_jobs()))
    controller.notifier.close()
    for task in background:
        task.cancel()
    await asyncio.wait(background, timeout=STOP_TIMEOUT_S)
    await controller.webhooks.close()
    await controller.bus.close()
    await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
    if watchdog:
        watchdog.cancel()
    controller.close()
    with contextlib.suppress(FileNotFoundError):
        config.socket_path.unlink()
    log.info("controller.stopped")
    return 0


async def _locked(config: Config, body: Callable[[], Awaitable[int]]) -> int:
    # First of all: a second daemon on this state dir would sweep, kill the appliances and
    # run the jobs of the first. Held until the process ends (the kernel drops it then).
    config.state_dir.mkdir(parents=True, exist_ok=True)
    state_lock = StateDirLock(config.state_dir)
    state_lock.acquire()
    try:
        return await body()
    finally:
        state_lock.release()


async def _serve_locked(config: Config, reread: Callable[[], Config] | None) -> int:
    loop = asyncio.get_running_loop()
    install_event_loop(loop)  # before any libvirt connection is opened
    agent = build_agent(config)
    fleet = None
    if config.amqp is not None:  # fleet mode: a single-host daemon imports none of it
        from agent.wiring_fleet import fleet_link
        fleet = fleet_link(agent)  # a fleet mode without its controller URL or token stops here
    # Before the API listens and any job resumes: nothing may create a guest meanwhile.
    stale = kill_stale_appliances(config.instances_dir)
    if stale:
        log.warning("recovery.stale_appliances_killed", pids=stale)
    swept = await sweep(agent.runner.deps, LocalFolders())
    report_quarantine(agent, swept)
    warm_for_images(agent)  # after the stale appliances went, before any build resumes
    # Bridges, taps lost to a host reboot, dnsmasq: as the store says.
    await agent.network.resync_host(agent.hypervisor)
    listeners = _api_listeners(config, agent.api)
    stop = _stop_on_signals(loop, agent.reload, reread or (lambda: config))
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in listeners]
    resumed = agent.runner.resume_all()
    agent.configure_webhooks(config)  # delivery tasks: each resumes from its durable cursor
    if fleet is not None:  # jobs from the broker once the runner can take them
        await fleet.start()
    events = LibvirtEventSource(config.libvirt_uri)
    background = [asyncio.create_task(agent.monitor.run()), asyncio.create_task(
        events.run(agent.monitor.notify, agent.monitor.connection_changed)),
        asyncio.create_task(agent.network.supervise())]
    reconcile_started = loop.time()
    agent.monitor.resync()  # the start-up reconcile: every server against libvirt
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agent.monitor.idle(), STARTUP_RECONCILE_TIMEOUT_S)
    await _listening(listeners, tasks)
    watchdog = await _ready_until_stopped(
        "agent", config, listeners, stop, fleet_host=fleet.host if fleet else None,
        jobs_resumed=resumed, orphans_removed=len(swept.domains_removed) + len(swept.dirs_removed),
        quarantined=len(swept.quarantined), reconcile_s=round(loop.time() - reconcile_started, 3))
    agent.notifier.close()  # ends event streams and long polls, so the listeners can stop
    if fleet is not None:  # no job comes in while the runner stops (unacked ones come again)
        await fleet.close()
    await agent.runner.stop(timeout=STOP_TIMEOUT_S)
    # A job paused mid-injection leaves its appliance working in a thread that the exit
    # waits for (minutes for a big batch): end it; the job redoes that disk on restart.
    kill_stale_appliances(config.instances_dir)
    await agent.webhooks.close()
    for task in background:
        task.cancel()
    await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
    if watchdog:
        watchdog.cancel()
    await agent.network.close()
    agent.close()
    with contextlib.suppress(FileNotFoundError):
        config.socket_path.unlink()
    log.info("agent.stopped")
    return 0

"""The monitor brings the store in line with libvirt: SHUTOFF when a guest powers off,
nothing during a task in flight, UNKNOWN while libvirt is unreachable, true states after."""

from __future__ import annotations

import pytest

from agent.core.monitor import PowerMonitor
from agent.core.workflows.guest_ops import ActionTimings, GuestOps
from agent.errors import HypervisorUnavailable
from agent.model.domain import PowerState
from agent.model.states import Status, TaskState


@pytest.fixture
async def active(world):
    server, _ = await world.create()
    await world.runner.idle()
    assert world.store.get_server(server.id).status is Status.ACTIVE
    return server.id


@pytest.fixture
def monitor(world):
    return PowerMonitor(world.store, world.hypervisor, kick=world.runner.kick)


async def test_guest_powered_off_shows_shutoff_with_an_event(world, monitor, active):
    world.hypervisor.states[active] = PowerState.SHUTDOWN
    await monitor.reconcile(active)
    s = world.store.get_server(active)
    assert s.status is Status.SHUTOFF and s.power_state is PowerState.SHUTDOWN
    last = world.store.events_since(0)[-1]
    assert (last.old_status, last.new_status, last.cause) == ("ACTIVE", "SHUTOFF",
                                                              "guest powered off")


async def test_a_shutdown_event_shows_shutoff_before_libvirt_can_be_read(world, monitor, active):
    """libvirt's "shutdown" event (the guest finished powering off) is taken as the power
    state: libvirt answers state reads only once QEMU is torn down, a second later."""
    world.hypervisor.fail_on["power_state"] = AssertionError("libvirt must not be read")
    monitor.notify(active, "shutdown")
    await monitor.reconcile(active)
    s = world.store.get_server(active)
    assert s.status is Status.SHUTOFF and s.power_state is PowerState.SHUTDOWN


async def test_an_event_after_a_shutdown_event_is_answered_from_libvirt(world, monitor, active):
    monitor.notify(active, "shutdown")
    monitor.notify(active, "started")  # e.g. a fake reboot: the guest came back
    await monitor.reconcile(active)
    assert world.store.get_server(active).status is Status.ACTIVE


async def test_no_status_change_while_a_task_is_in_flight(world, monitor, active):
    await world.store.update_server(active, {"task_state": TaskState.REBOOTING}, cause="test")
    world.hypervisor.states[active] = PowerState.SHUTDOWN
    await monitor.reconcile(active)
    s = world.store.get_server(active)
    assert s.status is Status.REBOOT and s.power_state is PowerState.SHUTDOWN
    assert "SHUTOFF" not in [e.new_status for e in world.store.events_since(0)]


async def test_a_build_in_flight_is_left_to_its_workflow_no_power_write(world, monitor):
    """The build records the power state with its last step: the monitor's events while
    it runs (domain defined, started) cost no write transaction."""
    world.runner._closing = True  # the build stays in flight
    server, _ = await world.create()
    world.hypervisor.define(GuestOps(world.deps, ActionTimings()).spec(server))
    world.hypervisor.start(server.id)
    before = world.store.revision()
    monitor.notify(server.id, "started")
    await monitor.reconcile(server.id)
    assert world.store.revision() == before
    s = world.store.get_server(server.id)
    assert s.status is Status.BUILD and s.power_state is PowerState.NOSTATE


async def test_a_guest_started_behind_our_back_is_active_again(world, monitor, active):
    world.hypervisor.states[active] = PowerState.SHUTDOWN
    await monitor.reconcile(active)
    world.hypervisor.states[active] = PowerState.RUNNING
    await monitor.reconcile(active)
    assert world.store.get_server(active).status is Status.ACTIVE


async def test_connection_loss_shows_unknown_then_the_true_state(world, monitor, active):
    world.hypervisor.fail_on["power_state"] = HypervisorUnavailable("libvirt is down")
    await monitor.connection_changed(False)
    assert world.store.get_server(active).status is Status.UNKNOWN
    await monitor.reconcile(active)  # still unreachable: stays UNKNOWN
    assert world.store.get_server(active).status is Status.UNKNOWN
    world.hypervisor.fail_on.clear()
    world.hypervisor.states[active] = PowerState.SHUTDOWN  # powered off meanwhile
    await monitor.connection_changed(True)
    await monitor.reconcile(active)
    assert world.store.get_server(active).status is Status.SHUTOFF


async def test_a_vanished_domain_shows_unknown_with_a_fault(world, monitor, active):
    world.hypervisor.undefine(active)
    await monitor.reconcile(active)
    s = world.store.get_server(active)
    assert s.status is Status.UNKNOWN and "vanished" in s.fault.message


async def test_a_vanished_domain_is_recorded_once_not_at_every_resync(world, monitor, active):
    world.hypervisor.undefine(active)
    await monitor.reconcile(active)
    before = world.store.revision()
    await monitor.reconcile(active)  # the next periodic resync finds it gone again
    assert world.store.revision() == before


async def test_a_vanished_domain_after_a_lost_connection_gets_its_fault(world, monitor, active):
    """UNKNOWN for a lost connection has no fault: the domain found gone afterwards is
    still recorded."""
    world.hypervisor.fail_on["power_state"] = HypervisorUnavailable("libvirt is down")
    await monitor.connection_changed(False)
    world.hypervisor.fail_on.clear()
    world.hypervisor.undefine(active)
    await monitor.reconcile(active)
    s = world.store.get_server(active)
    assert s.status is Status.UNKNOWN and "vanished" in s.fault.message


async def test_shutdown_terminate_deletes_instead(world, monitor):
    server, _ = await world.create(shutdown_terminate=True)
    await world.runner.idle()
    world.hypervisor.states[server.id] = PowerState.SHUTDOWN
    await monitor.reconcile(server.id)
    await world.runner.idle()
    assert world.store.get_server(server.id).status is Status.DELETED
    assert server.id not in world.hypervisor.domains


async def test_an_error_server_stays_in_error_whatever_the_power(world, monitor):
    server, _ = await world.create(admin_pass="weak")
    await world.runner.idle()
    world.hypervisor.states[server.id] = PowerState.SHUTDOWN
    await monitor.reconcile(server.id)
    assert world.store.get_server(server.id).status is Status.ERROR


async def test_resync_queues_every_live_server_once(world, monitor, active):
    assert monitor.resync() == 1
    monitor.notify(active)
    assert monitor._queue.qsize() == 1

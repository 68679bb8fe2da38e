"""The heartbeat loop and the controller's fleet rules (in order, down after three misses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.core.fleet_heartbeats import send_heartbeats
from agent.model.fleet import EventVerdict, Heartbeat, event_verdict, host_is_down

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Stop(Exception):
    pass


def beat(n: int) -> Heartbeat:
    return Heartbeat(host="hv1", vcpus=2, ram_mb=2048, disk_total_gb=10, disk_used_gb=n,
                     running_servers=0, virt_type="qemu", images=[], sent_at=NOW, interval_s=10)


class Publisher:
    def __init__(self) -> None:
        self.beats: list[Heartbeat] = []

    async def publish_event(self, event) -> None:  # pragma: no cover - not used here
        raise AssertionError

    async def publish_heartbeat(self, heartbeat: Heartbeat) -> None:
        self.beats.append(heartbeat)


async def test_a_beat_is_published_every_interval_and_a_failed_read_skips_only_that_beat():
    publisher = Publisher()
    reads = iter([beat(1), RuntimeError("libvirt away"), beat(3)])
    sleeps: list[float] = []

    async def read() -> Heartbeat:
        item = next(reads)
        if isinstance(item, Exception):
            raise item
        return item

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop

    with pytest.raises(Stop):
        await send_heartbeats(publisher, read, 10.0, sleep)
    assert [b.disk_used_gb for b in publisher.beats] == [1, 3]
    assert len(sleeps) == 3 and all(0 < s <= 10.0 for s in sleeps)


@pytest.mark.parametrize(("last", "seq", "verdict"), [
    (None, 1, EventVerdict.APPLY), (None, 5, EventVerdict.GAP),
    (4, 5, EventVerdict.APPLY), (4, 4, EventVerdict.DUPLICATE), (4, 2, EventVerdict.DUPLICATE),
    (4, 6, EventVerdict.GAP),
])
def test_events_are_applied_in_order_duplicates_skipped_and_gaps_noticed(last, seq, verdict):
    assert event_verdict(last, seq) == verdict


def test_a_host_is_down_after_three_missed_heartbeats_not_before():
    assert host_is_down(None, 10, NOW)
    assert not host_is_down(NOW - timedelta(seconds=30), 10, NOW)
    assert host_is_down(NOW - timedelta(seconds=30.5), 10, NOW)


async def test_a_heartbeat_reads_capacity_servers_held_and_images_present():
    from agent.core.fleet_heartbeats import heartbeat_reader
    from agent.model.host import HostCapacity, VirtType
    from agent.model.states import VmState
    from tests.unit.core.test_event_feed import add_server
    from tests.unit.fakes.images import FakeImageCatalog, make_image
    from tests.unit.fakes.store import MemoryStore

    store = MemoryStore()
    gone = await add_server(store)
    await store.update_server(gone.id, {"vm_state": VmState.DELETED, "task_state": None}, cause="t")
    await add_server(store)
    await add_server(store)
    images = FakeImageCatalog([make_image("busybox"), make_image("debian")])
    read = heartbeat_reader("hv1", store, images, lambda: HostCapacity(
        vcpus=2, ram_mb=24000, disk_total_gb=100, disk_used_gb=7), VirtType.QEMU, 10)
    beat = await read()
    assert (beat.host, beat.vcpus, beat.ram_mb, beat.disk_total_gb, beat.disk_used_gb) == (
        "hv1", 2, 24000, 100, 7)
    assert beat.running_servers == 2  # the deleted one is not held
    assert beat.images == sorted(str(i.uuid) for i in images.list())
    assert (beat.virt_type, beat.interval_s) == (VirtType.QEMU, 10)

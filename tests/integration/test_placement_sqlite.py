"""The Placer over the real SQLite store (the controller's): a burst of six creates lands
2/2/2, and an anti-affinity group of four on three hosts has no host for the fourth,
its members found through the servers' hints in SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.adapters.sqlite_store import SqliteStore
from agent.errors import NoValidHost
from agent.model.scheduling import GroupPolicy
from tests.unit.core.test_placement import Fleet, hosts_of


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    store = SqliteStore(tmp_path / "controller.db")
    f = Fleet(store)
    await f.add_hosts("hv1", "hv2", "hv3")
    yield f
    store.close()


async def test_a_burst_of_six_lands_two_two_two_and_a_second_project_spreads_too(fleet: Fleet):
    assert hosts_of([await fleet.create() for _ in range(6)]) == ["hv1", "hv1", "hv2", "hv2",
                                                                   "hv3", "hv3"]
    assert hosts_of([await fleet.create("p2") for _ in range(3)]) == ["hv1", "hv2", "hv3"]


async def test_the_fourth_of_an_anti_affinity_group_on_three_hosts_has_no_host(fleet: Fleet):
    group = await fleet.group(GroupPolicy.ANTI_AFFINITY)
    assert hosts_of([await fleet.create(group=group) for _ in range(3)]) == ["hv1", "hv2", "hv3"]
    assert len(fleet.store.get_server_group(group.id).members) == 3
    with pytest.raises(NoValidHost, match="No valid host was found"):
        await fleet.create(group=group)

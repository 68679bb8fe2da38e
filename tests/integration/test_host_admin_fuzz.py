"""Stateless fuzzing (schemathesis, in process) of the controller's own routes, which the
single agent's document does not have: /os-services and /os-hypervisors, with an admin
token (a project's token gets 403 from all of them), and /os-server-groups beside them.
The checks are test_api_fuzz's: no 5xx, the documented status, content type and body
schema, no secret echoed. Path ids are swapped for real ones now and then."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from starlette.applications import Starlette

from agent.api.app import create_api
from agent.core.host_admin import HostAdmin, host_number
from agent.model.fleet import Heartbeat
from agent.model.host import VirtType
from tests.integration.test_api_fuzz import CHECKS
from tests.unit.api.conftest import ADMIN, build_env
from tests.unit.fakes.hosts import MemoryHostRegistry

MAX_EXAMPLES = 25
FLEET_PATHS = ("/os-services", "/os-hypervisors", "/os-server-groups")


async def _app() -> Starlette:
    deps, store, _images, _ = build_env()
    registry = MemoryHostRegistry()
    for name in ("hv1", "hv2"):
        await registry.record_heartbeat(Heartbeat(
            host=name, vcpus=4, ram_mb=8192, disk_total_gb=100, disk_used_gb=1,
            running_servers=0, virt_type=VirtType.QEMU, images=[], sent_at=datetime.now(UTC),
            interval_s=10.0), datetime.now(UTC))
    deps.hosts = HostAdmin(registry, store, deps.flavors)
    return create_api(deps)


SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", asyncio.run(_app()))
OPERATIONS = sorted(label for result in SCHEMA.get_all_operations()
                    if any(p in (label := result.ok().label) for p in FLEET_PATHS))
REAL = {"hypervisor_id": [str(host_number("hv1"))], "hypervisor_hostname_pattern": ["hv"],
        "action": ["enable", "disable", "disable-log-reason"], "project_id": ["p-admin"]}


@functools.cache
def _cases(label: str) -> st.SearchStrategy[Case]:
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None, label
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                     operation.as_strategy(GenerationMode.NEGATIVE))


def test_the_fleet_routes_are_all_fuzzed():
    assert len(OPERATIONS) == 2 * 12  # with and without the project id in the path


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_as_admin(label: str) -> None:
    app = asyncio.run(_app())
    statuses: list[int] = []

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=_cases(label), data=st.data())
    def fuzz(case: Case, data: st.DataObject) -> None:
        path = case.path_parameters or {}
        for name in list(path):
            if name in REAL:
                path[name] = data.draw(st.sampled_from([*REAL[name], path[name]]), label=name)
        if isinstance(case.body, dict) and case.method.upper() == "PUT" and data.draw(
                st.booleans(), label="real host"):
            case.body.update(host="hv1", binary="nova-compute")
        case.headers = {**{k: v for k, v in (case.headers or {}).items()
                           if k.lower() != "x-auth-token"}, **ADMIN}
        response = case.call(app=app)
        case.validate_response(response, checks=CHECKS)
        statuses.append(response.status_code)
        assert response.status_code != 401, response.text
        if "os-server-groups" not in label:  # (there, 403 is the group quota once reached)
            assert response.status_code != 403, response.text

    fuzz()
    assert statuses

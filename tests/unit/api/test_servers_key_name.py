"""key_name at create and rebuild: the caller's keypair's public key goes into the job
(for root's authorized_keys) and key_name shows in the server; an unknown name (or
another user's) is a 400 as Nova words it, and nothing is made."""

from __future__ import annotations

from uuid import UUID

from agent.model.states import VmState
from tests.unit.api.conftest import ALICE, BOB, Env, fault
from tests.unit.api.test_keypairs import ED_PUB, RSA_PUB, create


def job_payload(env: Env, server_id: str) -> dict:
    [job] = [j for j in env.store.unfinished_jobs() if j.server_id == UUID(server_id)]
    return job.payload


async def test_create_with_key_name_carries_the_key_and_shows_its_name(env: Env):
    await create(env, name="laptop", public_key=ED_PUB + "\n")
    sid = (await env.create(key_name="laptop"))["id"]
    assert job_payload(env, sid)["authorized_keys"] == [ED_PUB]  # one line, no newline
    shown = (await env.client.get(f"/v2.1/servers/{sid}", headers=ALICE)).json()["server"]
    assert shown["key_name"] == "laptop"
    detail = (await env.client.get("/v2.1/servers/detail", headers=ALICE)).json()["servers"]
    assert detail[0]["key_name"] == "laptop"
    # Deleting the keypair leaves the server's key as it was (as Nova's key_data).
    await env.client.delete("/v2.1/os-keypairs/laptop", headers=ALICE)
    assert env.server(sid).key_data == ED_PUB
    assert (await env.client.get(f"/v2.1/servers/{sid}", headers=ALICE)).json()[
        "server"]["key_name"] == "laptop"


async def test_a_server_without_key_name_shows_null_and_injects_no_key(env: Env):
    sid = (await env.create())["id"]
    assert "authorized_keys" not in job_payload(env, sid)
    assert (await env.client.get(f"/v2.1/servers/{sid}", headers=ALICE)).json()[
        "server"]["key_name"] is None


async def test_an_unknown_or_another_users_key_name_is_a_400_and_makes_nothing(env: Env):
    await create(env, BOB, name="bobs", public_key=ED_PUB)
    for name in ("missing", "bobs"):
        r = await env.client.post("/v2.1/servers", headers=ALICE, json={"server": {
            "name": "vm", "imageRef": str(env.cirros.uuid), "flavorRef": "1", "key_name": name}})
        assert fault(r, 400, "badRequest") == "Invalid key_name provided."
    assert (await env.client.get("/v2.1/servers", headers=ALICE)).json()["servers"] == []


async def rebuild(env: Env, sid: str, **args):
    return await env.client.post(f"/v2.1/servers/{sid}/action", headers=ALICE, json={
        "rebuild": {"imageRef": str(env.cirros.uuid), **args}})


async def finish_jobs(env: Env) -> None:
    for job in env.store.unfinished_jobs():
        await env.store.update_job(job.id, {"status": "succeeded"})


async def test_rebuild_keeps_replaces_or_removes_the_servers_key(env: Env):
    await create(env, name="old", public_key=ED_PUB)
    await create(env, name="new", public_key=RSA_PUB)
    sid = await env.create_active(key_name="old")
    await finish_jobs(env)

    r = await rebuild(env, sid)  # no key_name: the server's key again, on the fresh disk
    assert r.status_code == 202 and r.json()["server"]["key_name"] == "old"
    assert job_payload(env, sid)["authorized_keys"] == [ED_PUB]
    await finish_jobs(env)
    await env.set_state(sid, VmState.ACTIVE)

    r = await rebuild(env, sid, key_name="new")
    assert r.status_code == 202 and r.json()["server"]["key_name"] == "new"
    assert job_payload(env, sid)["authorized_keys"] == [RSA_PUB]
    assert env.server(sid).key_data == RSA_PUB
    await finish_jobs(env)
    await env.set_state(sid, VmState.ACTIVE)

    r = await rebuild(env, sid, key_name=None)
    assert r.status_code == 202 and r.json()["server"]["key_name"] is None
    assert "authorized_keys" not in job_payload(env, sid)
    assert env.server(sid).key_data is None


async def test_rebuild_with_an_unknown_key_name_is_a_400_and_changes_nothing(env: Env):
    sid = await env.create_active()
    await finish_jobs(env)
    assert fault(await rebuild(env, sid, key_name="missing"), 400,
                 "badRequest") == "Invalid key_name provided."
    assert env.store.unfinished_jobs() == [] and env.server(sid).task_state is None

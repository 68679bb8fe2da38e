"""/os-keypairs as Nova 2.1 answers it: generate (the private key in that answer only),
import (fingerprint as Nova and ssh-keygen -E md5 compute it), list, show, delete; each
user sees only their own; bad names and keys are refused naming the field, and nothing
is stored then."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import threading

import pytest

from tests.unit.api.conftest import ALICE, BOB, Env, fault

# Made with ssh-keygen; FINGERPRINT_* are what `ssh-keygen -l -E md5 -f` printed for them.
RSA_PUB = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDFhRRIyzhCKQg2Z4OYn2EsLTXjEWpoWYnoPTmHkHv4a/i1HPlZ6Ex"
    "Le87BEPFz11epnrLp8pJEWSru8MLoDXdx5mGqEU/pJa/vllT+RSd9c07TJDCfhKqr21kfQc0umwD/trnodtteAJveAF"
    "B4l17ZozgRu64TFgu+pytVGFH5xKGyYHoJq62t1QGcy0jVJoQxxtkCWRjPAuI7X+KCByL2R1Ftm8S5Fsr3SLxbsEk4RT"
    "rMrga/Cm4Bkp5IPZd1dAdL0YLGBs5ZbkDQM6GlvYklBeBoH5WjA7w923KARlQUahkR78eNarHQGbzi6Qd8ZdTRcrGINt"
    "cWfupHZOYp6Gc9 alice@laptop")
FINGERPRINT_RSA = "9b:f3:56:73:d9:f3:df:12:ff:01:45:50:c4:38:f4:9f"
ED_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWQp/A3mkPeSvRYJpbw/1lBq2h6I2KBVhdSOnBLyicz bob@desk"
FINGERPRINT_ED = "ec:c4:32:a1:ac:3c:9d:39:97:e4:ad:cd:e2:a7:88:4f"
KP = "/v2.1/os-keypairs"


async def create(env: Env, headers=ALICE, **keypair):
    return await env.client.post(KP, headers=headers, json={"keypair": keypair})


def md5_colons(public_key: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_key.split()[1])).hexdigest()  # noqa: S324
    return ":".join(re.findall("..", digest))


async def test_generate_answers_200_with_the_private_key_once_as_nova_2_1_does(env: Env):
    r = await create(env, name="my key")
    assert r.status_code == 200, r.text  # 2.1: 200 (201 only from 2.2)
    kp = r.json()["keypair"]
    assert set(kp) == {"name", "public_key", "fingerprint", "user_id", "private_key"}
    assert (kp["name"], kp["user_id"]) == ("my key", "alice")
    assert re.fullmatch(r"ssh-rsa AAAA[A-Za-z0-9+/=]+ Generated-by-Nova", kp["public_key"])
    assert kp["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert kp["private_key"].rstrip().endswith("-----END RSA PRIVATE KEY-----")
    assert kp["fingerprint"] == md5_colons(kp["public_key"])
    private_body = kp["private_key"].splitlines()[1]
    shown = await env.client.get(f"{KP}/my key", headers=ALICE)
    listed = await env.client.get(KP, headers=ALICE)
    for later in (shown, listed):
        assert later.status_code == 200 and "private_key" not in later.text
        assert private_body not in later.text
    assert private_body not in repr(env.store.__dict__)  # never kept


async def test_import_keeps_the_key_and_fingerprints_it_as_nova_does(env: Env):
    for name, pub, fingerprint in (("rsa", RSA_PUB, FINGERPRINT_RSA), ("ed", ED_PUB + "\n", FINGERPRINT_ED)):
        r = await create(env, name=name, public_key=pub)
        assert r.status_code == 200, r.text
        assert r.json() == {"keypair": {"name": name, "public_key": pub, "fingerprint": fingerprint,
                                        "user_id": "alice"}}


async def test_list_and_show_have_nova_2_1_shapes(env: Env):
    await create(env, name="b", public_key=ED_PUB)
    await create(env, name="a", public_key=RSA_PUB)
    r = await env.client.get(KP, headers=ALICE)
    assert r.json() == {"keypairs": [
        {"keypair": {"name": "a", "public_key": RSA_PUB, "fingerprint": FINGERPRINT_RSA}},
        {"keypair": {"name": "b", "public_key": ED_PUB, "fingerprint": FINGERPRINT_ED}}]}
    shown = (await env.client.get(f"{KP}/a", headers=ALICE)).json()["keypair"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", shown.pop("created_at"))
    assert isinstance(shown.pop("id"), int)
    assert shown == {"name": "a", "public_key": RSA_PUB, "fingerprint": FINGERPRINT_RSA,
                     "user_id": "alice", "deleted": False, "deleted_at": None, "updated_at": None}


async def test_delete_answers_202_and_the_keypair_is_gone(env: Env):
    await create(env, name="k", public_key=ED_PUB)
    r = await env.client.delete(f"{KP}/k", headers=ALICE)
    assert (r.status_code, r.content) == (202, b"")
    assert fault(await env.client.get(f"{KP}/k", headers=ALICE), 404,
                 "itemNotFound") == "Keypair k not found for user alice"
    assert fault(await env.client.delete(f"{KP}/k", headers=ALICE), 404,
                 "itemNotFound") == "Keypair k not found for user alice"
    assert (await env.client.get(KP, headers=ALICE)).json() == {"keypairs": []}


async def test_a_name_is_unique_per_user_and_users_see_only_their_own(env: Env):
    assert (await create(env, name="k", public_key=ED_PUB)).status_code == 200
    assert fault(await create(env, name="k", public_key=RSA_PUB), 409,
                 "conflictingRequest") == "Key pair 'k' already exists."
    assert fault(await create(env, name="k"), 409, "conflictingRequest") == "Key pair 'k' already exists."
    assert (await create(env, BOB, name="k", public_key=RSA_PUB)).status_code == 200
    assert (await env.client.get(KP, headers=BOB)).json()["keypairs"][0]["keypair"][
        "public_key"] == RSA_PUB
    assert (await env.client.get(f"{KP}/k", headers=ALICE)).json()["keypair"]["public_key"] == ED_PUB
    assert (await env.client.delete(f"{KP}/k", headers=BOB)).status_code == 202
    assert (await env.client.get(f"{KP}/k", headers=ALICE)).status_code == 200  # alice's stays


@pytest.mark.parametrize(("keypair", "words"), [
    ({"name": "a/b"}, "Keypair data is invalid: Keypair name contains unsafe characters"),
    ({"name": "dé"}, "Keypair data is invalid: Keypair name contains unsafe characters"),
    ({"name": " lead"}, "Can not start or end with whitespace"),
    ({"name": ""}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"name": "k", "public_key": "not a key"}, "public_key. Keypair data is invalid: failed to "
                                                "generate fingerprint"),
    ({"name": "k", "public_key": "ssh-rsa AAAAB3NzaC1yc2E"}, "public_key"),
    ({"name": "k", "public_key": ED_PUB + "\nssh-rsa AAAA injected"}, "public_key"),
    ({"name": "k", "public_key": None}, "public_key"),
    ({"name": "k", "type": "ssh"}, "'type' was unexpected"),  # 2.2's field
    ({"name": "k", "user_id": "bob"}, "'user_id' was unexpected"),  # 2.10's field
])
async def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(env: Env, keypair, words):
    assert words in fault(await create(env, **keypair), 400, "badRequest")
    assert (await env.client.get(KP, headers=ALICE)).json() == {"keypairs": []}


async def test_the_per_user_quota_is_a_403_as_nova_words_it(env: Env):
    env.deps.keypairs.limits = env.deps.keypairs.limits.model_copy(update={"max_total_keypairs": 1})
    assert (await create(env, name="one", public_key=ED_PUB)).status_code == 200
    assert fault(await create(env, name="two", public_key=RSA_PUB), 403,
                 "forbidden") == "Quota exceeded, too many key pairs."
    assert (await create(env, BOB, name="two", public_key=RSA_PUB)).status_code == 200


async def test_keypairs_need_a_token(env: Env):
    assert (await env.client.get(KP)).status_code == 401


class HeldKeys:
    """SshKeys whose generate() waits until the test lets it go (on its worker thread)."""

    def __init__(self, real) -> None:
        self.real = real
        self.go = threading.Event()

    def generate(self):
        assert self.go.wait(30), "never let go"
        return self.real.generate()

    def fingerprint(self, public_key: str) -> str:
        return self.real.fingerprint(public_key)


async def test_other_requests_are_served_while_a_key_is_being_made(env: Env):
    held = HeldKeys(env.deps.keypairs.keys)
    env.deps.keypairs.keys = held
    making = asyncio.create_task(create(env, name="slow"))
    listed = await asyncio.wait_for(env.client.get(KP, headers=BOB), 30)  # not stuck behind it
    assert listed.status_code == 200 and not making.done()
    held.go.set()
    assert (await making).status_code == 200

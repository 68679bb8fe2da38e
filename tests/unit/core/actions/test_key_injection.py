"""root's SSH key through the wired core, with fakes: create with key_name puts the
keypair's public key into the same injection request as the files and password (one
appliance pass), and rebuild puts the server's key (or the newly named one) into the
fresh disk's."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.model.actions import RebuildServer
from agent.model.keypair import Keypair
from tests.unit.core.actions.conftest import ALICE
from tests.unit.core.conftest import IMAGE_ID

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWQp/A3mkPeSvRYJpbw/1lBq2h6I2KBVhdSOnBLyicz a@x"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDUbwA6cbNC7pj4VXBTYdcvDtHwRqTzm1F0HbMUjbKuy b@y"


async def add_keypair(aw, name: str, public_key: str) -> None:
    await aw.store.add_keypair(Keypair(user_id=ALICE.user_id, name=name, public_key=public_key,
                                 fingerprint="00", created_at=datetime.now(UTC)))


async def test_create_injects_the_key_with_the_password_in_one_request(aw):
    await add_keypair(aw, "a", KEY_A + "\n")
    sid = await aw.active(key_name="a")
    [batch] = aw.injector.calls
    [req] = batch
    assert req.disk == aw.deps.files(sid).disk
    assert req.authorized_keys == (KEY_A,) and req.root_password_hash is not None
    assert aw.server(sid).key_name == "a"


async def test_rebuild_injects_the_servers_key_or_the_new_one_into_the_fresh_disk(aw):
    await add_keypair(aw, "a", KEY_A)
    await add_keypair(aw, "b", KEY_B)
    sid = await aw.active(key_name="a")
    fresh = aw.deps.files(sid).disk.with_name("disk.rebuild.qcow2")

    await aw.actions.rebuild(ALICE, sid, RebuildServer(image_ref=IMAGE_ID))
    await aw.settle()
    assert aw.injector.injected[fresh].authorized_keys == (KEY_A,)

    await aw.actions.rebuild(ALICE, sid, RebuildServer(image_ref=IMAGE_ID, key_name="b",
                                                 key_name_given=True))
    await aw.settle()
    assert aw.injector.injected[fresh].authorized_keys == (KEY_B,)
    assert (aw.server(sid).key_name, aw.server(sid).key_data) == ("b", KEY_B)

    await aw.actions.rebuild(ALICE, sid, RebuildServer(image_ref=IMAGE_ID, key_name_given=True))
    await aw.settle()
    assert aw.injector.injected[fresh].authorized_keys == ()
    assert aw.server(sid).key_name is None

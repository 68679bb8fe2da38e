"""Stateless fuzzing of the served OpenAPI document with schemathesis, in process (ASGI).

Every operation of /openapi.json is fuzzed, with requests that fit the document and with
requests that do not, three times: with a valid token, with none and with a wrong one.
Every response must not be a 5xx; must have a documented status code, content type and
body schema; and must not show the token or a secret the request sent (adminPass,
user_data, personality contents). Without a valid token everything but version discovery
answers 401; with one, nothing does.

Generated ids rarely name anything, so each example may swap them for real ones (the
caller's server, another project's server, the token's project, a real image, flavor or
metadata key, a creatable server) to get past the 404s and 400s. Deterministic:
derandomized Hypothesis, no example database; quick: a bounded number of examples."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from agent.api.app import create_api
from agent.core.event_feed import MAX_WAIT_S
from agent.model.requests import CreateServer, RequestContext
from agent.model.states import VmState
from tests.unit.api.conftest import ALICE, BOB, TEST_NET, build_env

TOKEN = ALICE["X-Auth-Token"]
WRONG_TOKEN = "tok-wrong-5b0f7d4e9a21"
AUTHS = {"valid": TOKEN, "none": None, "wrong": WRONG_TOKEN}
# Examples per operation (about 1,070 requests in all): the module takes about 13 s on an
# idle 2-core machine.
MAX_EXAMPLES = {"valid": 20, "none": 4, "wrong": 4}
PUBLIC = frozenset({"GET /", "GET /v2.1", "GET /v2.1/"})
SECRET = "Fuzz-Adm1n-Secret-7c41"  # swapped in as adminPass now and then
MIN_SECRET_LEN = 8  # a shorter generated value may match ordinary text by chance
# A bound on one call, past the longest long poll the document allows (`wait` <= 30 s):
# schemathesis' default (10 s) cancelled longer polls, which FastAPI's routes swallowed
# (the poll went on to its end) and ours let through (a ReadTimeout failing the test).
CALL_TIMEOUT_S = MAX_WAIT_S + 30


def _load_schema() -> schemathesis.BaseSchema:
    deps, *_ = build_env()
    return schemathesis.openapi.from_asgi("/openapi.json", create_api(deps))


SCHEMA = _load_schema()
OPERATIONS = sorted(result.ok().label for result in SCHEMA.get_all_operations())


# -- the custom check: no secret echoed ------------------------------------------------------

class SecretEchoed(AssertionError):
    pass


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# The objects of a request body that may hold adminPass, user_data or personality:
# a create's, and those of the server actions that take a password.
SECRET_HOLDERS = ("server", "rebuild", "rescue", "changePassword")


def _split_secrets(body: Any) -> tuple[list[str], list[str]]:
    """(the strings at the secret places of a request body, every other string in it)."""
    holder = next((k for k in SECRET_HOLDERS
                   if isinstance(body, dict) and isinstance(body.get(k), dict)), None)
    if holder is None:
        return [], list(_strings(body))
    server = dict(body[holder])
    secrets = [*_strings(server.pop("adminPass", None)), *_strings(server.pop("user_data", None))]
    personality = server.pop("personality", None)
    public = list(_strings({**body, holder: server}))
    for item in personality if isinstance(personality, list) else [personality]:
        if isinstance(item, dict):
            item = dict(item)
            secrets += _strings(item.pop("contents", None))
        public += _strings(item)
    return secrets, public


def _sent_secrets(response: Response) -> list[str]:
    request = response.request
    token = request.headers.get("X-Auth-Token")
    try:
        body = json.loads(request.body) if request.body else None
    except ValueError:
        body = None
    secrets, public = _split_secrets(body)
    public.append(str(request.url))
    # A secret also sent in a public place (say, as the name too) may come back from there.
    found = [s for s in secrets if len(s) >= MIN_SECRET_LEN and not any(s in p for p in public)]
    return [token, *found] if token else found


def _shown(response: Response, case: Case) -> Iterator[str]:
    """What a response shows: its headers and every string of its body; but the adminPass
    of a created or rebuilt server and of a rescue, which Nova returns to the caller by
    design."""
    yield from (f"{name}: {value}" for name, values in response.headers.items() for value in values)
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        yield response.content.decode("utf-8", "replace")
        return
    if (response.status_code == 202 and case.method.upper() == "POST"
            and isinstance(body, dict) and isinstance(body.get("server"), dict)):
        body = {**body, "server": {k: v for k, v in body["server"].items() if k != "adminPass"}}
    if (response.status_code == 200 and case.method.upper() == "POST" and isinstance(body, dict)
            and set(body) == {"adminPass"}):  # a rescue's
        body = {}
    yield from _strings(body)


def no_secret_echoed(ctx: CheckContext | None, response: Response, case: Case) -> bool | None:
    """The token and the secrets of a request never come back in the response."""
    secrets = _sent_secrets(response)
    for text in _shown(response, case):
        if any(secret in text for secret in secrets):
            raise SecretEchoed(f"{case.operation.label}: a secret of the request is in the response "
                               f"({response.status_code})")
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, no_secret_echoed]


# -- the world the examples run in --------------------------------------------------------

@dataclass
class World:
    app: Starlette
    alice_server: str  # ACTIVE, metadata {"k": "v"}
    bob_server: str  # another project's
    image: str
    port: str  # a free port of the caller's


async def _world() -> World:
    """A fresh API over a fresh store (quotas of LIMITS: it stays small)."""
    deps, store, images, _kicked = build_env()
    image = str(images.get("cirros").uuid)

    async def seed(token: str) -> str:
        info = deps.tokens[token]
        ctx = RequestContext(project_id=info.project_id, user_id=info.user_id)
        server, _ = await deps.servers.create(ctx, CreateServer(name="seed", image_ref=image, flavor_ref="1",
                                                          metadata={"k": "v"}))
        await store.update_server(server.id, {"vm_state": VmState.ACTIVE, "task_state": None}, cause="test")
        return str(server.id)

    assert deps.ports is not None
    port = await deps.ports.create_port(RequestContext(project_id="p-alice", user_id="alice"),
                                        str(TEST_NET.id))
    return World(app=create_api(deps), alice_server=await seed(TOKEN),
                 bob_server=await seed(BOB["X-Auth-Token"]),
                 image=image, port=str(port.id))


def _swap_ids(case: Case, world: World, data: st.DataObject) -> None:
    """Now and then, ids and bodies that name real things instead of generated ones."""
    path = case.path_parameters or {}
    real = {"server_id": [world.alice_server, world.bob_server], "project_id": ["p-alice"],
            "image_id": [world.image], "flavor_id": ["1"], "key": ["k"],
            "network_id": [str(TEST_NET.id)], "subnet_id": [str(TEST_NET.subnet_id)],
            "port_id": [world.port]}
    for name in list(path):
        if name in real:
            path[name] = data.draw(st.sampled_from([*real[name], path[name]]), label=name)
    if case.query and "marker" in case.query and not data.draw(st.booleans(), label="marker as generated"):
        case.query["marker"] = world.alice_server
    body = case.body
    if (isinstance(body, dict) and isinstance(body.get("meta"), dict) and "key" in path
            and not data.draw(st.booleans(), label="meta as generated")):
        body["meta"] = {unquote(path["key"]): next(iter(body["meta"].values()), "v")}
    if case.method.upper() == "POST" and case.path.endswith("/servers"):
        how = data.draw(st.sampled_from(["valid", "real refs", "generated"]), label="create body")
        if how == "valid":
            case.body = body = {"server": {"name": "fuzz", "metadata": {"k": "v"}}}
        if how != "generated" and isinstance(body, dict) and isinstance(body.get("server"), dict):
            body["server"].update(imageRef=world.image, flavorRef="1")
            if not data.draw(st.booleans(), label="adminPass as generated"):
                body["server"]["adminPass"] = SECRET
            nics = data.draw(st.sampled_from(["as generated", "network", "fixed ip", "port"]), label="nics")
            if nics != "as generated":
                body["server"]["networks"] = [{"port": world.port} if nics == "port" else {
                    "uuid": str(TEST_NET.id), **({"fixed_ip": "10.213.0.9"} if nics == "fixed ip" else {})}]
    if (case.method.upper() == "POST" and case.path.endswith("/action") and isinstance(body, dict)
            and len(body) == 1 and data.draw(st.booleans(), label="action args with real refs")):
        [(action, args)] = body.items()
        if action in ("rebuild", "rescue", "changePassword") and isinstance(args, dict):
            args["adminPass"] = SECRET
            if action == "rebuild":
                args["imageRef"] = world.image
    if (case.method.upper() == "POST" and case.path.endswith("/ports") and isinstance(body, dict)
            and isinstance(body.get("port"), dict) and data.draw(st.booleans(), label="real network")):
        body["port"]["network_id"] = str(TEST_NET.id)


@functools.cache
def _cases(label: str) -> st.SearchStrategy[Case]:
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None, label
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                     operation.as_strategy(GenerationMode.NEGATIVE))


_UNAUTHENTICATED = asyncio.run(_world())  # nothing gets past authentication: one world serves them all


def test_every_operation_of_the_document_is_fuzzed():
    documented = {f"{method.upper()} {path}" for path, item in SCHEMA.raw_schema["paths"].items()
                  for method in item if method in {"get", "put", "post", "delete", "patch"}}
    assert set(OPERATIONS) == documented
    assert {"GET /", "POST /v2.1/servers", "DELETE /v2.1/{project_id}/servers/{server_id}"} <= documented


@pytest.mark.parametrize("auth", list(AUTHS))
@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz(label: str, auth: str) -> None:
    world = asyncio.run(_world()) if auth == "valid" else _UNAUTHENTICATED
    token = AUTHS[auth]
    statuses: list[int] = []

    @settings(max_examples=MAX_EXAMPLES[auth], derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=_cases(label), data=st.data())
    def fuzz(case: Case, data: st.DataObject) -> None:
        _swap_ids(case, world, data)
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-auth-token"}
        if token is not None:
            headers["X-Auth-Token"] = token
        case.headers = headers
        response = case.call(app=world.app, timeout=CALL_TIMEOUT_S)
        case.validate_response(response, checks=CHECKS)
        statuses.append(response.status_code)
        if token == TOKEN or label in PUBLIC:
            assert response.status_code != 401, response.text
        else:
            assert response.status_code == 401, response.text

    fuzz()
    assert statuses


# -- the custom check catches what it should -------------------------------------------------

def _answering(status: int, body: Any, echo_header: bool = False) -> Any:
    """An ASGI app that answers every request with this status and JSON body (and, if
    asked, the request's token in a header)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json")]
        if echo_header:
            headers += [(b"x-seen", v) for k, v in scope["headers"] if k == b"x-auth-token"]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
    return app


def _create_case(**server: Any) -> Case:
    operation = SCHEMA.find_operation_by_label("POST /v2.1/servers")
    assert operation is not None
    return operation.Case(body={"server": {"name": "vm", "imageRef": "x", "flavorRef": "1", **server}},
                          headers=dict(ALICE))


@pytest.mark.parametrize(("status", "body", "echo_header"), [
    (400, {"badRequest": {"code": 400, "message": f"Bad adminPass {SECRET}"}}, False),
    (400, {"badRequest": {"code": 400, "message": "no"}}, True),
    (202, {"server": {"id": "1", "name": SECRET, "adminPass": SECRET}}, False),
    (400, {"badRequest": {"code": 400, "message": f"{SECRET[:9]}{TOKEN}"}}, False),
])
def test_the_check_fails_a_response_that_shows_a_secret(status: int, body: Any, echo_header: bool):
    case = _create_case(adminPass=SECRET)
    response = case.call(app=_answering(status, body, echo_header))
    with pytest.raises(SecretEchoed):
        no_secret_echoed(None, response, case)


@pytest.mark.parametrize(("sent", "shown"), [
    ({"adminPass": SECRET}, {"server": {"id": "1", "adminPass": SECRET}}),  # the creator's own
    ({"adminPass": "short"}, {"server": {"id": "1", "name": "short"}}),  # too short to tell
    ({"adminPass": "same-as-name", "name": "same-as-name"}, {"server": {"id": "1", "name": "same-as-name"}}),
])
def test_the_check_passes_what_nova_shows_by_design(sent: dict[str, str], shown: Any):
    case = _create_case(**sent)
    response = case.call(app=_answering(202, shown))
    assert no_secret_echoed(None, response, case) is None

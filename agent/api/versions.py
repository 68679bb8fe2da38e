"""API version discovery (GET /, GET /v2.1) and the microversion rules.

This surface is Compute API v2.1 with no microversions on top: a request may ask for
"2.1" or "latest" (both mean 2.1); any other version is refused as Nova refuses an
unsupported one (406), and a malformed version string is a 400, as in Nova.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from agent.api.models import PUBLIC_ERRORS, VersionList, VersionShow
from agent.api.routing import Router

MICROVERSION = "2.1"
UPDATED = "2013-07-23T11:33:21Z"
MEDIA_TYPE = "application/vnd.openstack.compute+json;version=2.1"
NEW_HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"
# Added to every response, as Nova adds them to every versioned one.
VERSION_HEADERS = {
    "openstack-api-version": f"compute {MICROVERSION}",
    "x-openstack-nova-api-version": MICROVERSION,
}
VARY = f"{NEW_HEADER}, {LEGACY_HEADER}"

_VERSION_RE = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


# Nova's documentation link, as every Nova answers it (a fixed URL in Nova's code).
DESCRIBED_BY = {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
# Nova lists the legacy v2.0 API beside v2.1; this host serves v2.1 only (see README).
V2_0 = {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
        "updated": "2011-01-21T11:33:21Z"}


def version_doc(base_url: str) -> dict[str, Any]:
    """GET /v2.1: the v2.1 version with its self and describedby links and media type."""
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": MICROVERSION,
        "min_version": MICROVERSION,
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{base_url.rstrip('/')}/v2.1/"}, dict(DESCRIBED_BY)],
        "media-types": [{"base": "application/json", "type": MEDIA_TYPE}],
    }


def versions_doc(base_url: str) -> list[dict[str, Any]]:
    """GET /: Nova's two entries, each with its self link only."""
    base = base_url.rstrip("/")
    current = {k: v for k, v in version_doc(base_url).items() if k not in ("links", "media-types")}
    return [{**V2_0, "links": [{"rel": "self", "href": f"{base}/v2/"}]},
            {**current, "links": [{"rel": "self", "href": f"{base}/v2.1/"}]}]


def requested_microversion(headers: Headers) -> str | None:
    """The compute microversion the request asks for, as microversion_parse finds it:
    the OpenStack-API-Version header's compute entry first, else the legacy header."""
    for value in headers.getlist(NEW_HEADER):
        for part in value.split(","):
            bits = part.strip().split(None, 1)
            if len(bits) == 2 and bits[0].lower() == "compute":
                return bits[1].strip()
    legacy = headers.get(LEGACY_HEADER)
    return legacy.strip() if legacy is not None else None


def microversion_error(headers: Headers) -> tuple[int, str] | None:
    """None when the request may go on; else the (status, message) to refuse it with."""
    asked = requested_microversion(headers)
    if asked is None or asked.lower() == "latest":
        return None
    shown = asked[:40]
    match = _VERSION_RE.match(asked)
    if match is None:
        return 400, (f"API Version String {shown} is of invalid format. Must be of format "
                     "MajorNum.MinorNum.")
    if (int(match.group(1)), int(match.group(2))) != (2, 1):
        return 406, (f"Version {shown} is not supported by the API. Minimum is {MICROVERSION} "
                     f"and maximum is {MICROVERSION}.")
    return None


router = Router(tags=["versions"])


@router.get("/", response_model=VersionList, responses=PUBLIC_ERRORS,
            summary="List API versions (no authentication)")
async def list_versions(request: Request) -> JSONResponse:
    return JSONResponse({"versions": versions_doc(str(request.base_url))})


@router.get("/v2.1", response_model=VersionShow, responses=PUBLIC_ERRORS,
            summary="Show API v2.1 (no authentication)")
async def show_version(request: Request) -> JSONResponse:
    return JSONResponse({"version": version_doc(str(request.base_url))})


@router.get("/v2.1/", response_model=VersionShow, responses=PUBLIC_ERRORS,
            summary="Show API v2.1 (no authentication)")
async def show_version_slash(request: Request) -> JSONResponse:
    return JSONResponse({"version": version_doc(str(request.base_url))})

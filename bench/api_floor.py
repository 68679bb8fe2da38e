"""Figure 5's reference: the least an HTTP service can do to list the same servers.

`python -m bench.api_floor DB HOST:PORT` serves GET /v2.1/servers/detail (and `?limit=N`) on uvicorn (the
agent's server, same settings) with a bare Starlette route that runs one SQL SELECT of the
project's live servers from the agent's SQLite file (read-only) and answers the rows as
JSON (`json.dumps` of the raw columns). No auth, no model validation, no Nova view: what
is left is HTTP, the query and the serialisation, which the agent cannot do without.
`floor_body()` is the same work in-process, without HTTP."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SQL = ("SELECT * FROM servers WHERE project_id = ? AND vm_state != 'deleted' "
       "ORDER BY created_at DESC, id DESC LIMIT ?")
PAGE = 1000  # the agent's default page (ServerService.max_page)


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def floor_body(conn: sqlite3.Connection, project: str = "bench", limit: int = PAGE) -> bytes:
    rows = conn.execute(SQL, (project, min(limit, PAGE))).fetchall()
    return json.dumps({"servers": [dict(r) for r in rows]}).encode()


def app(db: Path) -> Starlette:
    conn = connect(db)

    async def detail(request: Request) -> Response:
        limit = int(request.query_params.get("limit", PAGE))  # figure 5's page of 10
        return Response(floor_body(conn, limit=limit), media_type="application/json")

    return Starlette(routes=[Route("/v2.1/servers/detail", detail), Route("/v2.1/servers", detail),
                             Route("/", lambda r: Response("ok"))])


def main() -> None:
    db, listen = Path(sys.argv[1]), sys.argv[2]
    host, port = listen.rsplit(":", 1)
    uvicorn.run(app(db), host=host, port=int(port), log_config=None, access_log=False,
                lifespan="off")


if __name__ == "__main__":
    main()

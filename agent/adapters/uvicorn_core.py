"""uvicorn's server, config and HTTP protocol, without its command line.

`import uvicorn` (or of any of its modules) runs uvicorn/__init__.py, which imports
`uvicorn.main`: the command line (click) and the reload and multi-process supervisors
(multiprocessing). The daemon runs none of it, and it cost 1.7 MiB RSS (1.5 RssAnon) of
the idle daemon's memory (issue 15). When nothing has imported uvicorn yet, the package is
registered here without running its __init__, so that its modules load on their own; the
two names that uvicorn's own modules take from the package (`from uvicorn import Config`
in uvicorn.lifespan) are then set on it. If uvicorn was imported whole before (a test, a
tool), that package is used as it is.

Everything the agent takes from uvicorn comes through this module."""

from __future__ import annotations

import importlib.util
import sys


def _register_package_without_cli() -> None:
    if "uvicorn" in sys.modules:
        return
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("uvicorn is not installed")
    sys.modules["uvicorn"] = importlib.util.module_from_spec(spec)  # not executed


_register_package_without_cli()

from uvicorn.config import Config  # noqa: E402  (after the package is registered)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import Server, ServerState  # noqa: E402

_package = sys.modules["uvicorn"]
if not hasattr(_package, "Config"):
    _package.Config = Config  # type: ignore[attr-defined]
    _package.Server = Server  # type: ignore[attr-defined]

__all__ = ["Config", "HttpToolsProtocol", "Server", "ServerState"]

"""An in-memory DiskInjector: records what would go into each disk."""

from __future__ import annotations

from pathlib import Path

from agent.errors import InjectionError
from agent.model.injection import InjectionRequest, InjectionResult


class FakeInjector:
    def __init__(self) -> None:
        self.calls: list[list[InjectionRequest]] = []
        self.injected: dict[Path, InjectionRequest] = {}
        self.fail_disks: set[Path] = set()

    def inject(self, requests: list[InjectionRequest]) -> list[InjectionResult | InjectionError]:
        self.calls.append(list(requests))
        out: list[InjectionResult | InjectionError] = []
        for r in requests:
            if r.disk in self.fail_disks:
                out.append(InjectionError("no recognisable root filesystem on the guest disk"))
                continue
            self.injected[r.disk] = r
            out.append(InjectionResult(disk=r.disk, written=tuple(f.path for f in r.files),
                                       password_set=r.root_password_hash is not None,
                                       keys_added=len(r.authorized_keys)))
        return out

"""Server groups (/os-server-groups) as Nova has them at 2.1: a project's, one policy each,
members are the servers created with the scheduler hint {"group": id}. The hint is checked
at create (an unknown group is a 400, as Nova answers) and written back in its canonical
form, so the store finds the group's members by it. Quotas: server_groups per project,
server_group_members per group (Nova's defaults 10 and 10; [limits] in the config)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from agent.core.validation import check_name
from agent.errors import InvalidInput, QuotaExceeded, ServerGroupNotFound
from agent.model.requests import Limits, RequestContext
from agent.model.scheduling import GroupPolicy, ServerGroup, group_not_found_message
from agent.protocols import Store

GROUPS_QUOTA_MESSAGE = "Quota exceeded, too many server groups."  # Nova's 403
MEMBERS_QUOTA_MESSAGE = "Quota exceeded, too many servers in group"  # Nova's 403 (no stop)


class ServerGroupService:
    def __init__(self, store: Store, limits: Limits,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.limits = limits
        self.now = now
        self._adding = asyncio.Lock()  # the quota checked and the group added, no turn between

    def used(self, project_id: str) -> int:
        """The project's server groups (its server_groups quota usage)."""
        return len(self.store.list_server_groups(project_id))

    async def create(self, ctx: RequestContext, name: str, policy: GroupPolicy) -> ServerGroup:
        check_name(name)
        async with self._adding:
            if self.used(ctx.project_id) >= self.limits.max_server_groups:
                raise QuotaExceeded(GROUPS_QUOTA_MESSAGE)
            return await self.store.add_server_group(ServerGroup(
                id=uuid.uuid4(), project_id=ctx.project_id, user_id=ctx.user_id, name=name,
                policy=policy, created_at=self.now()))

    def list(self, ctx: RequestContext, *, all_projects: bool = False) -> list[ServerGroup]:
        """The caller's project's groups; every project's for an admin asking all_projects
        (Nova ignores all_projects from others)."""
        return self.store.list_server_groups(None if all_projects and ctx.is_admin
                                             else ctx.project_id)

    def get(self, ctx: RequestContext, group_id: str) -> ServerGroup:
        """The group, if it is the caller's project's (any project's for an admin);
        ServerGroupNotFound otherwise, a malformed id included."""
        try:
            group = self.store.get_server_group(UUID(group_id))
        except ValueError:
            group = None
        if group is None or (group.project_id != ctx.project_id and not ctx.is_admin):
            raise ServerGroupNotFound(group_not_found_message(group_id[:64]))
        return group

    async def delete(self, ctx: RequestContext, group_id: str) -> None:
        """Delete the group; its members stay (as in Nova), placed as they are."""
        await self.store.delete_server_group(self.get(ctx, group_id).id)

    # -- the create's hint ------------------------------------------------------------
    def check_hints(self, ctx: RequestContext, hints: dict[str, Any]) -> tuple[dict[str, Any],
                                                                            ServerGroup | None]:
        """The hints with the group's id in canonical form, and the group (None: no
        group hint). A group that is not a UUID, or not one of the caller's project (any
        project's for an admin), is a 400 naming the field, as Nova answers."""
        raw = hints.get("group")
        if raw is None:
            return hints, None
        text = str(raw)[:64]
        try:
            group_id = UUID(str(raw))
        except ValueError:
            raise InvalidInput(f"Invalid input for field/attribute group. Value: {text}. "
                               f"'{text}' is not a 'uuid'", "group") from None
        try:
            group = self.get(ctx, str(group_id))
        except ServerGroupNotFound:
            raise InvalidInput(group_not_found_message(group_id), "group") from None
        return {**hints, "group": str(group.id)}, group

    def check_members_quota(self, group: ServerGroup | None, count: int) -> None:
        """The group can take `count` more members (Nova's server_group_members)."""
        if group is not None and len(group.members) + count > self.limits.max_server_group_members:
            raise QuotaExceeded(MEMBERS_QUOTA_MESSAGE)

"""Rows of the SQLite store: the SQL that writes servers, jobs and events, and the
conversions between rows and the model (timestamps as fixed-width UTC text)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from agent.model.job import Job
from agent.model.server import Server
from agent.model.states import VmState

INSERT_SERVER = """INSERT INTO servers (id, project_id, user_id, name, image_id, flavor_id,
    vm_state, task_state, power_state, progress, metadata, access_ipv4, access_ipv6,
    shutdown_terminate, fault, created_at, updated_at, launched_at, deleted_at, reservation_id,
    security_groups, scheduler_hints, key_name, key_data, host)
  VALUES (:id, :project_id, :user_id, :name, :image_id, :flavor_id, :vm_state, :task_state,
    :power_state, :progress, :metadata, :access_ipv4, :access_ipv6, :shutdown_terminate,
    :fault, :created_at, :updated_at, :launched_at, :deleted_at, :reservation_id,
    :security_groups, :scheduler_hints, :key_name, :key_data, :host)"""
UPDATE_SERVER = """UPDATE servers SET user_id = :user_id, name = :name, image_id = :image_id,
    flavor_id = :flavor_id, vm_state = :vm_state, task_state = :task_state,
    power_state = :power_state, progress = :progress, metadata = :metadata,
    access_ipv4 = :access_ipv4, access_ipv6 = :access_ipv6,
    shutdown_terminate = :shutdown_terminate, key_name = :key_name, key_data = :key_data,
    fault = :fault, updated_at = :updated_at,
    launched_at = :launched_at, deleted_at = :deleted_at,
    security_groups = :security_groups, scheduler_hints = :scheduler_hints, host = :host
  WHERE id = :id"""
INSERT_JOB = """INSERT INTO jobs (id, server_id, kind, status, step, payload, error, attempts,
    created_at, updated_at)
  VALUES (:id, :server_id, :kind, :status, :step, :payload, :error, :attempts, :created_at,
    :updated_at)"""
UPDATE_JOB = """UPDATE jobs SET status = :status, step = :step, payload = :payload,
    error = :error, attempts = :attempts, updated_at = :updated_at WHERE id = :id"""
INSERT_EVENT = """INSERT INTO events (server_id, project_id, old_status, new_status,
    power_state, cause, at) VALUES (?, ?, ?, ?, ?, ?, ?)"""


def utcnow() -> datetime:
    return datetime.now(UTC)


def ts(dt: datetime | None) -> str | None:
    """Fixed-width ISO-8601 UTC text, so text order is time order."""
    if dt is None:
        return None
    if dt.utcoffset() is None:
        raise ValueError("naive datetime: the store keeps timezone-aware datetimes only")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def server_params(s: Server) -> dict[str, Any]:
    fault = None
    if s.fault is not None:
        fault = json.dumps({"code": s.fault.code, "message": s.fault.message,
                            "created": ts(s.fault.created)})
    return {
        "id": str(s.id), "project_id": s.project_id, "user_id": s.user_id, "name": s.name,
        "image_id": str(s.image_id), "flavor_id": s.flavor_id, "vm_state": s.vm_state.value,
        "task_state": s.task_state.value if s.task_state else None,
        "power_state": int(s.power_state), "progress": s.progress,
        "metadata": json.dumps(s.metadata, sort_keys=True), "access_ipv4": s.access_ipv4,
        "access_ipv6": s.access_ipv6, "shutdown_terminate": int(s.shutdown_terminate),
        "key_name": s.key_name, "key_data": s.key_data, "fault": fault,
        "created_at": ts(s.created_at), "updated_at": ts(s.updated_at),
        "launched_at": ts(s.launched_at), "deleted_at": ts(s.deleted_at),
        "reservation_id": s.reservation_id,
        "security_groups": json.dumps(list(s.security_groups)),
        "scheduler_hints": json.dumps(s.scheduler_hints, sort_keys=True),
        "host": s.host,
    }


def row_server(row: sqlite3.Row) -> Server:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    data["fault"] = json.loads(data["fault"]) if data["fault"] else None
    data["shutdown_terminate"] = bool(data["shutdown_terminate"])
    data["security_groups"] = tuple(json.loads(data["security_groups"]))
    data["scheduler_hints"] = json.loads(data["scheduler_hints"])
    return Server.model_validate(data)


def job_params(j: Job) -> dict[str, Any]:
    try:
        payload = json.dumps(j.payload, sort_keys=True)
    except (TypeError, ValueError) as e:  # the message names no value, only the type
        raise ValueError(f"job {j.id}: payload is not JSON-serialisable ({type(e).__name__})") from None
    return {"id": str(j.id), "server_id": str(j.server_id), "kind": j.kind.value,
            "status": j.status.value, "step": j.step, "payload": payload, "error": j.error,
            "attempts": j.attempts, "created_at": ts(j.created_at), "updated_at": ts(j.updated_at)}


def row_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["payload"] = json.loads(data["payload"])
    return Job.model_validate(data)




def apply_server_changes(current: Server, changes: dict[str, Any], now: datetime) -> Server:
    """The server with `changes` applied (validated), updated_at=now and, when it has just
    become deleted, deleted_at=now unless given."""
    new = Server.model_validate({**current.model_dump(), **changes, "updated_at": now})
    if new.vm_state is VmState.DELETED and new.deleted_at is None:
        new = new.model_copy(update={"deleted_at": now})
    return new

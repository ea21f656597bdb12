"""Ingestion workers on many machines: Celery over Redis (docs/scaling.md, "Ingestion workers").

`app` configures Celery, `tasks` is what a worker runs, `worker` starts one, `enqueue`
indexes through the fleet, `control` watches and steers it. Needs the `server` extra
(`celery[redis]`).
"""

from __future__ import annotations

from .app import DEFAULT_VISIBILITY_TIMEOUT, QUEUE, fleet_app
from .control import (
    FleetStatus,
    WorkerReply,
    WorkerStatus,
    fleet_status,
    pause_workers,
    resize_workers,
    resume_workers,
    stop_workers,
)
from .enqueue import BATCH_PHOTOS, FleetRunner, index_on_fleet
from .worker import default_worker_name, run_worker

__all__ = [
    "BATCH_PHOTOS",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "QUEUE",
    "FleetRunner",
    "FleetStatus",
    "WorkerReply",
    "WorkerStatus",
    "default_worker_name",
    "fleet_app",
    "fleet_status",
    "index_on_fleet",
    "pause_workers",
    "resize_workers",
    "resume_workers",
    "run_worker",
    "stop_workers",
]

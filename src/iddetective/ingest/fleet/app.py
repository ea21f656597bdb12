"""The Celery app of the ingestion fleet: one Redis URL is both the broker and the result store.

Delivery is at least once: a batch is acknowledged only after its photos are stored
(`task_acks_late`), a batch whose worker process died is put back (`task_reject_on_worker_lost`),
and a batch whose whole worker vanished comes back once the visibility timeout has passed.
Running a batch twice is harmless because `Store.save` is idempotent by SHA-256.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ...errors import UsageError

__all__ = [
    "DEFAULT_VISIBILITY_TIMEOUT",
    "QUEUE",
    "TASK_NAME",
    "fleet_app",
    "queue_depth",
]

#: The Redis list the ingestion batches wait in.
QUEUE = "iddetective-ingest"
TASK_NAME = "iddetective.ingest_batch"
#: Seconds a batch may stay unacknowledged before Redis hands it to another worker. It must be
#: longer than the longest batch plus the longest retry wait (RETRY_BACKOFF_MAX, 60 s), or a
#: batch still running is handed out again (harmless, but the work is done twice); it is
#: also how long a batch of a worker machine that vanished waits before it is redone.
#: A batch of 8 photos takes 5-30 s on one core; 300 s leaves ten times that.
DEFAULT_VISIBILITY_TIMEOUT = 300.0
#: Published batches survive a broker that is briefly away (a restart): about a minute.
PUBLISH_RETRY = {"max_retries": 60, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


def fleet_app(broker: str, *, visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT) -> Celery:
    """The Celery app for the fleet on `broker` (`redis://host:port/db`), ingest task included."""
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"the broker must be a redis:// URL, not {broker!r}")
    if visibility_timeout <= 0:
        raise UsageError(f"the visibility timeout must be positive, not {visibility_timeout}")
    app = Celery("iddetective", broker=broker, backend=broker, set_as_current=False)
    app.conf.update(_settings(visibility_timeout))
    from .tasks import register

    register(app)
    return app


def _settings(visibility_timeout: float) -> dict[str, Any]:
    # Unacknowledged batches are looked for often enough that one is redone soon after its
    # timeout: every tenth of it, between 1 and 10 s.
    sweep = max(1, min(10, round(visibility_timeout / 10)))
    return {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": sweep,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker outlives any broker outage
        # A batch running when the broker went away is redelivered (or resent): stop it.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Models load in each new worker process (tasks.warm_up): give it time on a busy host.
        "worker_proc_alive_timeout": 120.0,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_expires": 7 * 24 * 3600,
        "redis_socket_connect_timeout": 5,
    }


def queue_depth(app: Celery) -> int:
    """Batches waiting in the ingestion queue (Redis LLEN), not counting those running."""
    with app.connection_for_read() as connection:
        return int(connection.default_channel.client.llen(QUEUE))

"""What a call to an engine replica raised, as a typed error.

Ray wraps a replica's own exception (`RayTaskError.cause`), reports a dead actor as
`RayActorError` and a full queue as `BackPressureError`; the ingress needs one of
lorafleet's types to answer with (`deployments.api.http_errors`) and to decide whether
a retry may help. Decided by type, never by message text.
"""

from __future__ import annotations

import asyncio
import logging
import math

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError

from adapters.errors import LorafleetError
from deployments.errors import EngineDead, Overloaded

logger = logging.getLogger(__name__)


def classify_engine_failure(err: BaseException) -> LorafleetError:
    """Turn what a remote replica call raised into a typed error (by type, never text)."""
    if isinstance(err, LorafleetError):
        return err
    cause = getattr(err, "cause", None)  # RayTaskError wraps the replica's own exception
    if isinstance(cause, LorafleetError):
        return cause
    if isinstance(err, BackPressureError):
        return Overloaded("All engine replicas are busy; retry shortly.", retry_after_s=math.ceil(err.retry_after_s or 1))
    if isinstance(err, RayActorError):  # includes ActorDiedError / ActorUnavailableError
        return EngineDead("The engine replica serving this request went away; retry.", replica=err.actor_id)
    if isinstance(err, asyncio.TimeoutError):
        return Overloaded("The request timed out waiting for an engine replica.", retry_after_s=2)
    logger.error("engine call failed", exc_info=err)
    return LorafleetError("Internal error while generating; the request was not completed.")

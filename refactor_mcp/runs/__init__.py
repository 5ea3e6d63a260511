"""Runs that outlive the call that started them: a handle for each, the store that keeps their outcomes, and
the runs this process holds upstream requests for."""

from __future__ import annotations

from ..config import Settings
from ..errors import RunStoreUnavailableError
from .store import InMemoryRunStore, RunStore


def run_store(settings: Settings) -> RunStore:
    """The store REFACTOR_RUN_STORE_URL names (Redis, shared by replicas), or this process's own."""
    if settings.run_store_url is None:
        return InMemoryRunStore(settings.run_ttl_seconds)
    try:
        from .redis_store import RedisRunStore
    except ImportError:
        raise RunStoreUnavailableError(
            "REFACTOR_RUN_STORE_URL is set, but the Redis client is not installed: pip install 'refactor-mcp[redis]'"
        ) from None
    return RedisRunStore(settings)


async def store_problem(settings: Settings) -> str | None:
    """Why the configured run store cannot serve, said once at start; None when it answers, or none is set."""
    if settings.run_store_url is None:
        return None
    try:
        await run_store(settings).check()
    except RunStoreUnavailableError as error:
        return error.message
    return None

"""A run store on Redis (or Valkey), shared by every replica of a deployment, chosen by REFACTOR_RUN_STORE_URL.

Keys, all under REFACTOR_RUN_STORE_PREFIX and all expiring:
- `run:<digest of the handle>`: a hash per run (handle, owner digest, tool, runnable, start, holder; once ended the
  outcome, encrypted when REFACTOR_RUN_STORE_KEY is set, and its end). Kept `run_ttl_seconds` after the run ended
  (a task: its ttl); while pending, its holder's heartbeat keeps it. Listing keys reveals no handle to replay.
- `owner:<digest of the owner>`: a sorted set of the owner's run digests, for `tasks/list`.
- `replica:<id>`: a replica's heartbeat, refreshed every HEARTBEAT_SECONDS, expiring after LIVENESS_SECONDS. A pending
  run whose holder's heartbeat is gone is lost: the next reader records it so. Found gone by its own replica (Redis
  restarted, or the heartbeat lapsed in an outage), the replica writes again the pending runs Redis lost.
- `cancels:<replica id>`: the digests of the runs other replicas asked this one to cancel, beside a message on its
  channel: the set outlives a message missed while reconnecting, and the heartbeat reads it.
- `epoch`: when Redis last started empty (its replicas found no epoch): for SETTLING_SECONDS after, an unknown handle
  reads as the store being unavailable, not as unknown, since its holder may not have written it back yet.
Channels: `ended` (a run's outcome is kept: waiters on every replica look again) and `cancel:<replica id>`.

Writes that decide (the first end, a lost end giving way to the real one) are Lua scripts: one round trip each,
atomic. When Redis cannot be reached, reads raise RunStoreUnavailableError; outcomes that could not be written are
kept in memory and written by the heartbeat once it answers again, with the pending runs it lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from ..config import Settings
from ..errors import RunStoreUnavailableError
from .store import CancelHandler, RunRecord, RunStore

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
LIVENESS_SECONDS = 10.0
"""A replica silent this long is gone: its pending runs read as lost within LIVENESS_SECONDS + HEARTBEAT_SECONDS."""
SETTLING_SECONDS = 3 * HEARTBEAT_SECONDS
"""After Redis restarted empty, how long an unknown handle may still be a pending run its holder has not written back
yet: such a read answers run_store_unavailable rather than unknown_handle."""
CANCEL_FLAG_SECONDS = 60
COMMAND_TIMEOUT_SECONDS = 5.0
FIELDS = ("handle", "owner", "tool", "runnable", "started", "holder", "ttl_ms", "outcome", "ended", "lost")

T = TypeVar("T")

# KEYS: run, owner index. ARGV: ttl in ms, lost ("1"/"0"), ended channel, digest, started, then field/value pairs.
END = """
local had = redis.call('HGET', KEYS[1], 'outcome')
if had and (ARGV[2] == '1' or redis.call('HGET', KEYS[1], 'lost') ~= '1') then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
# KEYS: run, owner index. ARGV: ttl, digest, started, then field/value pairs. Never over an outcome.
ADD = """
if redis.call('HEXISTS', KEYS[1], 'outcome') == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return 1
"""
# KEYS: run, epoch. ARGV: the replica key prefix, settling seconds. The fields, then 1 when the holder's heartbeat is
# there (or the run ended); nil for an unknown run; 'settling' while the store may still be getting back the runs it
# lost (its epoch is younger than the settling time: Redis restarted empty moments ago).
GET = """
local values = redis.call('HMGET', KEYS[1], 'handle', 'owner', 'tool', 'runnable', 'started', 'holder', 'ttl_ms',
  'outcome', 'ended', 'lost')
if not values[1] then
  local since = redis.call('GET', KEYS[2])
  if not since or tonumber(redis.call('TIME')[1]) - tonumber(since) < tonumber(ARGV[2]) then return 'settling' end
  return nil
end
local alive = 1
if not values[8] then alive = redis.call('EXISTS', ARGV[1] .. values[6]) end
table.insert(values, alive)
return values
"""
# KEYS: epoch. ARGV: ttl. The epoch is when Redis last started empty, as its replicas found it.
EPOCH = """
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then
  redis.call('SET', KEYS[1], redis.call('TIME')[1], 'EX', ARGV[1])
end
"""
# KEYS: run, owner index. ARGV: ttl. 0 when the run is gone (Redis lost it).
REFRESH = """
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return 1
"""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def where(url: str) -> str:
    """The store's address for messages: scheme, host, port and database, never a user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    place = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{place}{parts.path}"


class RedisRunStore(RunStore):
    """Runs in Redis, read and cancelled from any replica; see the module docstring for the keys."""

    def __init__(self, settings: Settings) -> None:
        assert settings.run_store_url is not None
        url = settings.run_store_url.get_secret_value()
        self.where = where(url)
        self.replica = secrets.token_hex(6)
        self._ttl = settings.run_ttl_seconds
        self._prefix = settings.run_store_prefix
        self._replicas = self._key("replica:", "")
        self._epoch = self._key("epoch", "")
        self._get_args: list[str | int] = [self._replicas, int(SETTLING_SECONDS)]
        keys = settings.run_store_key.get_secret_value().split(",") if settings.run_store_key is not None else []
        self._cipher = MultiFernet([Fernet(key.strip()) for key in keys]) if keys else None
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=COMMAND_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            health_check_interval=30,
        )
        self._end, self._add = self._redis.register_script(END), self._redis.register_script(ADD)
        self._get, self._refresh = self._redis.register_script(GET), self._redis.register_script(REFRESH)
        self._mark_epoch = self._redis.register_script(EPOCH)
        self._held: dict[str, RunRecord] = {}
        """Pending runs added by this process: the heartbeat keeps their keys, and writes them again if lost."""
        self._refreshed: dict[str, float] = {}
        """When each held run's keys were last given their TTL (time.monotonic())."""
        self._beaten = False
        self._unsaved: dict[str, tuple[RunRecord, dict[str, Any], bool]] = {}
        """Outcomes that could not be written: the heartbeat writes them once Redis answers."""
        self._waiters: dict[str, set[anyio.Event]] = {}
        self._on_cancel: CancelHandler = lambda handle: None
        self._outage: str | None = None
        self._scope = anyio.CancelScope()

    async def open(self, on_cancel: CancelHandler, tasks: TaskGroup) -> None:
        self._on_cancel = on_cancel
        try:
            await self._redis.ping()
            await self._beat()
        except RedisError as exc:
            await self._redis.aclose()
            raise self._unavailable(exc) from None
        tasks.start_soon(self._serve)
        logger.info("run store: %s, as replica %s", self.where, self.replica)

    async def check(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise RunStoreUnavailableError(
                f"cannot reach the run store {self.where} (REFACTOR_RUN_STORE_URL): {str(exc).rstrip('.')}. Start "
                "it, or correct the URL (host, port, user and password, rediss:// for TLS); unset "
                "REFACTOR_RUN_STORE_URL to keep runs in this process instead"
            ) from None
        finally:
            await self._redis.aclose()

    async def _serve(self) -> None:
        with self._scope:
            async with anyio.create_task_group() as loops:
                loops.start_soon(self._heartbeat)
                loops.start_soon(self._listen)

    async def close(self) -> None:
        self._scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(COMMAND_TIMEOUT_SECONDS):
            await self._write_unsaved()
            with contextlib.suppress(RedisError):
                await self._redis.delete(self._key("replica:", self.replica))
        await self._redis.aclose()

    async def add(self, record: RunRecord) -> None:
        record.holder = self.replica
        await self._call(self._write_pending(record))
        self._held[record.handle] = record
        self._refreshed[record.handle] = time.monotonic()

    async def get(self, handle: str, owner: str) -> RunRecord | None:
        values = await self._call(self._get(keys=[self._run_key(handle), self._epoch], args=self._get_args))
        if values == b"settling":
            raise RunStoreUnavailableError(
                f"The run store ({self.where}) lost its data moments ago (it restarted), and the replicas are writing "
                "back the runs they hold: call again in a few seconds."
            )
        record = self._record(values, owner) if values is not None else None
        return record if record is not None and record.handle == handle else None

    async def wait(self, handle: str, owner: str, seconds: float) -> RunRecord | None:
        deadline = anyio.current_time() + seconds
        event = anyio.Event()
        waiters = self._waiters.setdefault(digest(handle), set())
        waiters.add(event)
        try:
            while True:
                record = await self.get(handle, owner)
                left = deadline - anyio.current_time()
                if record is None or record.outcome is not None or not record.holder_alive or left <= 0:
                    return record
                with anyio.move_on_after(min(left, HEARTBEAT_SECONDS)):  # a missed message costs a heartbeat
                    await event.wait()
                waiters.discard(event)
                event = anyio.Event()
                waiters.add(event)
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(digest(handle), None)

    async def end(self, record: RunRecord, outcome: dict[str, Any], lost: bool = False) -> bool:
        self._held.pop(record.handle, None)
        self._refreshed.pop(record.handle, None)
        try:
            return await self._write_end(record, outcome, lost)
        except RedisError as exc:
            if record.holder != self.replica:
                raise self._unavailable(exc) from None
            self._unsaved[record.handle] = (record, outcome, lost)
            logger.warning(
                "the run store %s cannot be reached (%s): the outcome of run handle %s is kept in memory and written "
                "once it answers",
                self.where,
                exc,
                record.handle,
            )
            return True

    async def owned(self, owner: str) -> list[RunRecord]:
        index = self._owner_key(owner)
        members: list[bytes] = await self._call(self._redis.zrange(index, 0, -1))  # type: ignore[arg-type]
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in members:
                keys = [self._key("run:", member.decode()), self._epoch]
                await self._get(keys=keys, args=self._get_args, client=pipe)
            rows = [row if row != b"settling" else None for row in await self._call(pipe.execute())]
        records = [record for row in rows if row is not None and (record := self._record(row, owner)) is not None]
        if gone := [member for member, row in zip(members, rows, strict=True) if row is None]:
            await self._call(self._redis.zrem(index, *gone))
        return records

    async def request_cancel(self, record: RunRecord) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            asked = self._key("cancels:", record.holder)
            pipe.sadd(asked, digest(record.handle))
            pipe.expire(asked, CANCEL_FLAG_SECONDS)
            pipe.publish(self._key("cancel:", record.holder), record.handle.encode())
            await self._call(pipe.execute())

    # Writing

    async def _write_pending(self, record: RunRecord) -> None:
        ttl = int(self._ttl) + 1
        key, index = self._run_key(record.handle), self._owner_key(record.owner)
        await self._add(keys=[key, index], args=[ttl, digest(record.handle), record.started_at, *self._fields(record)])

    async def _write_end(self, record: RunRecord, outcome: dict[str, Any], lost: bool) -> bool:
        ttl_ms = int(self._ttl * 1000) if record.task_ttl_ms is None else record.task_ttl_ms
        text = json.dumps(outcome, separators=(",", ":")).encode()
        sealed = self._cipher.encrypt(text) if self._cipher is not None else text
        fields = [
            *self._fields(record),
            b"outcome",
            sealed,
            b"ended",
            repr(time.time()),
            b"lost",
            b"1" if lost else b"0",
        ]
        key, index = self._run_key(record.handle), self._owner_key(record.owner)
        channel, name = self._key("ended", ""), digest(record.handle)
        return bool(
            await self._end(
                keys=[key, index], args=[ttl_ms, "1" if lost else "0", channel, name, record.started_at, *fields]
            )
        )

    async def _write_unsaved(self) -> None:
        for handle, (record, outcome, lost) in list(self._unsaved.items()):
            try:
                await self._write_end(record, outcome, lost)
            except RedisError:
                return
            del self._unsaved[handle]
            logger.warning("the run store answers again: the outcome of run handle %s is written", handle)

    # Heartbeat and messages

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._beat()
            except RedisError as exc:
                if self._outage is None:
                    self._outage = str(exc)
                    logger.warning(
                        "the run store %s cannot be reached (%s): get_run and cancel_run answer run_store_unavailable "
                        "until it answers; runs go on",
                        self.where,
                        exc,
                    )
                continue
            if self._outage is not None:
                self._outage = None
                logger.warning("the run store %s answers again", self.where)
                self._wake_all()

    async def _beat(self) -> None:
        """Say this replica is alive, hear the cancels asked of it, keep its pending runs (writing them again when
        Redis lost them), and write the outcomes kept in memory. O(1) round trips, but for runs due a refresh."""
        asked_key = self._key("cancels:", self.replica)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("replica:", self.replica), b"1", ex=int(LIVENESS_SECONDS), get=True)
            pipe.smembers(asked_key)
            pipe.delete(asked_key)
            await self._mark_epoch(keys=[self._epoch], args=[int(self._ttl) + 1], client=pipe)
            was, asked, _, _ = await pipe.execute()
        if was is None and self._beaten:  # Redis restarted, or this heartbeat lapsed: check every run it holds
            self._refreshed.clear()
        self._beaten = True
        if asked:
            by_digest = {digest(handle): handle for handle in self._held}
            for name in asked:
                if (handle := by_digest.get(name.decode())) is not None:
                    self._on_cancel(handle)
        await self._keep()
        await self._write_unsaved()

    async def _keep(self) -> None:
        """Refresh the keys of pending runs not refreshed for a quarter of their TTL; write again those gone."""
        now, ttl = time.monotonic(), int(self._ttl) + 1
        due = [record for handle, record in self._held.items() if self._refreshed.get(handle, 0) + ttl / 4 <= now]
        if not due:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for record in due:
                keys = [self._run_key(record.handle), self._owner_key(record.owner)]
                await self._refresh(keys=keys, args=[ttl], client=pipe)
            answers = await pipe.execute()
        for record, answer in zip(due, answers, strict=True):
            if record.handle not in self._held:
                continue
            if answer == 0:
                await self._write_pending(record)
            self._refreshed[record.handle] = now

    async def _listen(self) -> None:
        ended, cancel = self._key("ended", ""), self._key("cancel:", self.replica)
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(ended, cancel)
                    self._wake_all()  # what was said while not subscribed is read again from the store
                    while True:
                        message = await pubsub.get_message(timeout=HEARTBEAT_SECONDS)
                        if message is None:
                            continue
                        data = message["data"].decode()
                        if message["channel"].decode() == cancel:
                            self._on_cancel(data)
                        else:
                            for event in self._waiters.get(data, ()):
                                event.set()
            except RedisError:
                await anyio.sleep(HEARTBEAT_SECONDS)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    # Encoding

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}{name}"

    def _run_key(self, handle: str) -> str:
        return self._key("run:", digest(handle))

    def _owner_key(self, owner: str) -> str:
        return self._key("owner:", digest(owner))

    def _fields(self, record: RunRecord) -> list[Any]:
        return [
            b"handle", record.handle,
            b"owner", digest(record.owner),
            b"tool", record.tool,
            b"runnable", record.runnable_id,
            b"started", repr(record.started_at),
            b"holder", record.holder,
            b"ttl_ms", "" if record.task_ttl_ms is None else str(record.task_ttl_ms),
        ]  # fmt: skip

    def _record(self, values: list[Any], owner: str) -> RunRecord | None:
        """The run from its fields, or None when it is not `owner`'s."""
        handle, owner_digest, tool, runnable, started, holder, ttl_ms, outcome, ended, lost, alive = values
        if owner_digest.decode() != digest(owner):
            return None
        record = RunRecord(
            handle.decode(),
            owner,
            tool.decode(),
            runnable.decode(),
            float(started),
            holder=holder.decode(),
            task_ttl_ms=int(ttl_ms) if ttl_ms else None,
            holder_alive=bool(alive),
        )
        if outcome is not None:
            record.outcome = json.loads(self._open(outcome))
            record.ended_at, record.lost = float(ended), lost == b"1"
        return record

    def _open(self, sealed: bytes) -> bytes:
        if self._cipher is None:
            return sealed
        try:
            return self._cipher.decrypt(sealed)
        except InvalidToken:
            raise RunStoreUnavailableError(
                "A run outcome in the run store cannot be decrypted with REFACTOR_RUN_STORE_KEY: the replicas must "
                "share the same keys (during a rotation, list the new key first and keep the old one after it)."
            ) from None

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except RedisError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> RunStoreUnavailableError:
        return RunStoreUnavailableError(
            f"The run store ({self.where}, REFACTOR_RUN_STORE_URL) cannot be reached: {str(exc).rstrip('.')}. "
            "Runs go on and their outcomes are kept; call get_run or cancel_run again in a minute. If this lasts, "
            "the operator should check that Redis is up and reachable from this server."
        )

"""The composition root: builds every part from the config and runs them in one TaskGroup.

Lifecycle, in one place: open the outbox, start one task per source and the delivery
task, tell systemd READY once the outbox is open and every source finished its first
poll attempt (a source that is down shows in STATUS rather than holding the service
in "activating" until systemd kills it), then run until SIGTERM/SIGINT. Signals only set
the stop event; each task finishes its current step (a poll page, in-flight PUBACKs up
to ``agent.shutdown_timeout``), the retained status goes offline, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from agent.api import serve
from agent.config import Config, load_config, read_secret
from agent.delivery import Delivery, DeliverySettings, status_payload
from agent.envelope import now_rfc3339, rfc3339_from_epoch, source_urn, topic_base
from agent.errors import ConfigError, OutboxError
from agent.inbox import Inbox
from agent.notify import Notifier
from agent.outbox import Outbox, OutboxStats
from agent.publisher import LinkSettings, RelayLink, parse_relay_url, tls_context
from agent.runners import SourceRunner, SourceSet, sleep_unless

log = logging.getLogger("distillsync.service")

PRUNE_EVERY = 60.0
STATUS_EVERY = 5.0


@contextlib.contextmanager
def single_instance(state_dir: Path) -> Iterator[None]:
    """One daemon per state directory: two would share the outbox, send everything twice
    and steal the MQTT session from each other. The lock dies with the process."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "agent.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise OutboxError(
                f"another agent (pid {holder}) is already running on {state_dir}"
            ) from None
        lock.seek(0)
        lock.truncate()
        try:  # unbuffered, so a failed write leaves nothing for close() to fail on
            os.write(lock.fileno(), f"{os.getpid()}\n".encode())
        except OSError as error:  # a full disk: the lock holds; only the pid note is lost
            log.warning("cannot note our pid in %s: %s", state_dir / "agent.lock", error)
        yield


def link_settings(config: Config, started_at: str | None = None) -> LinkSettings:
    relay = config.relay
    host, port, secure = parse_relay_url(relay.url)
    base = topic_base(relay.topic_prefix, config.agent.tenant, config.agent.id)
    return LinkSettings(
        host=host,
        port=port,
        tls=tls_context(relay.ca_file, relay.cert_file, relay.key_file) if secure else None,
        client_id=config.client_id,
        username=relay.username,
        password=read_secret(
            relay.password_file, relay.password_env, "relay.password", relay.password_credential
        ),
        keepalive=int(relay.keepalive),
        session_expiry=int(relay.session_expiry),
        will_topic=f"{base}/status",
        will_payload=status_payload("offline", started_at or now_rfc3339()),
        protocol=relay.protocol,
        inbound_topic=f"{base}/in/#",
    )


def delivery_settings(config: Config) -> DeliverySettings:
    return DeliverySettings(
        topic_base=topic_base(config.relay.topic_prefix, config.agent.tenant, config.agent.id),
        source=source_urn(config.agent.tenant, config.agent.id),
        max_inflight=config.relay.max_inflight,
        ack_timeout=config.relay.ack_timeout,
        shutdown_timeout=config.agent.shutdown_timeout,
        backoff_cap=config.relay.reconnect_max,
    )


class Agent:
    """Everything one ``distillsync run`` owns."""

    def __init__(
        self, config: Config, notifier: Notifier | None = None, config_path: Path | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        """Where SIGHUP re-reads the config from (None: no reloads)."""
        self.notifier = notifier or Notifier()
        self.stop = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.started_at = now_rfc3339()
        self.started_monotonic = time.monotonic()
        self._announced: tuple[object, ...] = ()

    @property
    def runners(self) -> list[SourceRunner]:
        return self.sources.runners

    async def run(self) -> None:
        cfg = self.config
        state_file = cfg.agent.state_dir / "outbox.db"
        with single_instance(cfg.agent.state_dir):
            await self._run_with_outbox(state_file)
        log.info("stopped")

    async def _run_with_outbox(self, state_file: Path) -> None:
        cfg = self.config
        async with Outbox.open(
            state_file, cfg.outbox.synchronous, cfg.outbox.delivered_retention
        ) as outbox:
            self.outbox, self.sources = outbox, SourceSet(outbox)
            self.inbox = Inbox(outbox, cfg.master, cfg.inbox.import_when)
            self.sources.prepare(list(cfg.sources))
            try:
                await self._run_parts(outbox)
            finally:
                await self.sources.close()

    async def _run_parts(self, outbox: Outbox) -> None:
        settings = link_settings(self.config, self.started_at)
        delivery = Delivery(
            outbox,
            lambda: RelayLink(settings),
            delivery_settings(self.config),
            self.stop,
            self.started_at,
            self.compact_status,
            self.inbox,
        )
        self.delivery = delivery
        log.info(
            "agent %s/%s started, outbox %s, status API %s",
            self.config.agent.tenant,
            self.config.agent.id,
            self.config.agent.state_dir / "outbox.db",
            self.config.api.socket,
        )
        async with serve(self, self.config.api), asyncio.TaskGroup() as group:
            group.create_task(delivery.run(), name="delivery")
            self.sources.start(group)
            group.create_task(self._announce_ready(list(self.runners)), name="ready")
            group.create_task(self._every(PRUNE_EVERY, outbox.prune_delivered), name="prune")
            group.create_task(self._every(STATUS_EVERY, self._report), name="status")
            group.create_task(self._reloads(), name="reload")
            if self.notifier.watchdog_interval:
                group.create_task(
                    self._every(self.notifier.watchdog_interval, self._ping), name="watchdog"
                )
            await self.stop.wait()
            log.info("stopping: finishing the current poll page and in-flight publishes")
            self.notifier.stopping()
            self.sources.stop_all()
            outbox.stopping.set()  # a failing disk must not hold the stop (see record_results)

    # --- SIGHUP ---------------------------------------------------------------------------

    def request_reload(self) -> None:
        self.reload_requested.set()

    async def _reloads(self) -> None:
        while not self.stop.is_set():
            asked = asyncio.ensure_future(self.reload_requested.wait())
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait([asked, stopping], return_when=asyncio.FIRST_COMPLETED)
            asked.cancel()
            stopping.cancel()
            if self.reload_requested.is_set() and not self.stop.is_set():
                self.reload_requested.clear()
                await self.reload()

    async def reload(self) -> None:
        """Re-read the config. Source changes apply now, without touching the outbox or
        the relay session; an invalid file is refused whole and the running config kept;
        changes outside ``[[sources]]`` wait for a restart (and say so)."""
        self.notifier.reloading()
        try:
            if self.config_path is None:
                raise ConfigError(["no config file to reload from"])
            new = load_config(self.config_path)
            needs_restart = [
                name
                for name in ("agent", "relay", "api", "outbox")
                if getattr(new, name) != getattr(self.config, name)
            ]
            started, stopped = await self.sources.replace(list(new.sources))
            self.config = self.config.model_copy(update={"sources": new.sources})
            log.info(
                "reloaded %s: sources started %s, stopped %s",
                self.config_path,
                ", ".join(started) or "none",
                ", ".join(stopped) or "none",
            )
            if needs_restart:
                log.warning(
                    "reload: [%s] changed; that takes effect at the next restart",
                    "], [".join(needs_restart),
                )
        except ConfigError as error:
            log.error("reload refused, the running config stays: %s", "; ".join(error.problems))
        finally:
            self.notifier.ready(self._status_line(await self.outbox.pending_count()))

    async def _announce_ready(self, runners: list[SourceRunner]) -> None:
        for runner in runners:
            await runner.first_attempt.wait()
        if not self.stop.is_set():
            self.notifier.ready(self._status_line(await self.outbox.pending_count()))
            log.info("ready")

    async def _every(self, seconds: float, action: Callable[[], Awaitable[object]]) -> None:
        while not self.stop.is_set():
            await sleep_unless(self.stop, seconds)
            if not self.stop.is_set():
                await action()

    async def _ping(self) -> None:
        self.notifier.watchdog()

    async def _report(self) -> None:
        stats = await self.outbox.stats()
        self.notifier.status(self._status_line(stats.pending))
        if self._state_signature(stats) != self._announced:
            self.delivery.announce_now.set()

    def _state_signature(self, stats: OutboxStats) -> tuple[object, ...]:
        """What changes the fleet view's row beyond its counters: refreshed within
        ``STATUS_EVERY`` instead of waiting for the periodic announcement."""
        relay = self.delivery.stats
        return (
            relay.last_error,
            relay.last_publish is None,
            stats.pending > 0,
            stats.dead_letters,
            tuple(r.paused for r in self.runners),
            tuple(p.stats.failing for r in self.runners for p in r.pollers),
        )

    async def compact_status(self) -> dict[str, object]:
        """The retained status' summary for the fleet view (see ``Delivery.describe``)."""
        stats = await self.outbox.stats()
        self._announced = self._state_signature(stats)
        relay = self.delivery.stats
        errors = [p.stats.last_error for r in self.runners for p in r.pollers if p.stats.failing]
        return {
            "backlog": stats.pending,
            "dead_letters": stats.dead_letters,
            "published": relay.published,
            "last_publish": rfc3339_from_epoch(relay.last_publish),
            "last_error": errors[0] if errors else relay.last_error,
            "sources_failing": len(errors),
            "paused": [r.config.name for r in self.runners if r.paused],
        }

    def _status_line(self, pending: int) -> str:
        return (
            f"relay {self.delivery.stats.state}, {pending} pending, "
            f"{self.delivery.stats.published} published"
        )

    def request_stop(self) -> None:
        self.stop.set()


async def run_until_signalled(config: Config, path: Path | None = None) -> None:
    agent = Agent(config, config_path=path)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.request_stop)
    loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
    await agent.run()

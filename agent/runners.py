"""The running sources: one :class:`SourceRunner` per ``[[sources]]`` table, started in
the agent's TaskGroup and replaced one by one when a reload changes them.

Each runner has its own stop event, so a reload can retire one source (it finishes its
current page, then its connections close) while the others, the outbox and the relay
session carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from agent.config import SourceConfig, read_secret
from agent.errors import SourceError
from agent.outbox import Outbox
from agent.poller import FeedPoller
from agent.sources.base import Source
from agent.sources.sql import SqlReader

log = logging.getLogger("distillsync.service")


def source_password(source: SourceConfig, index: int) -> str | None:
    return read_secret(
        source.password_file,
        source.password_env,
        f"sources[{index}].password",
        source.password_credential,
    )


def open_source(source: SourceConfig, index: int) -> Source:
    """The source ``[[sources]]`` table ``index`` describes (connections open lazily); a
    bad URL or secret raises :class:`ConfigError` naming its key."""
    match source.type:
        case "sql":
            return SqlReader(source, source_password(source, index), f"sources[{index}]")


@dataclass
class SourceRunner:
    """Polls one source's feeds every ``poll_interval``; a failing source backs off alone."""

    config: SourceConfig
    pollers: list[FeedPoller]
    stop: asyncio.Event
    reader: Source | None = None
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    paused: bool = False
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                await self._cycle_with_backoff()
                self.first_attempt.set()
                # A fixed rate: a slow poll must not add its own length to the next wait.
                elapsed = time.monotonic() - started
                await sleep_unless(self.stop, max(0.0, self.config.poll_interval - elapsed))
        finally:
            self.first_attempt.set()

    async def _cycle_with_backoff(self) -> None:
        interval = self.config.poll_interval
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(SourceError),
            wait=wait_exponential_jitter(initial=interval, max=max(300.0, interval)),
            stop=lambda _state: self.stop.is_set(),
            sleep=lambda seconds: sleep_unless(self.stop, seconds),
            before_sleep=self._log_failure,
            reraise=False,
            retry_error_callback=lambda _state: None,
        )
        async for attempt in retrying:
            with attempt:
                await self.cycle()

    async def cycle(self) -> None:
        for poller in self.pollers:
            if self.stop.is_set() or self.paused:
                return
            try:
                totals = await poller.poll()
            except SourceError as error:
                poller.stats.errors += 1
                poller.stats.last_error = str(error)
                poller.stats.last_poll_end = time.time()
                raise
            if totals.enqueued or totals.dead:
                log.info(
                    "%s/%s: %d rows read, %d changes, %d dead letters",
                    self.config.name,
                    poller.feed.feed,
                    totals.rows,
                    totals.enqueued,
                    totals.dead,
                )

    def _log_failure(self, state: RetryCallState) -> None:
        self.first_attempt.set()
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s (attempt %d); retrying in %.1fs", error, state.attempt_number, delay)


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class SourceSet:
    """The agent's sources; :meth:`replace` swaps in a reloaded ``[[sources]]`` list."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.runners: list[SourceRunner] = []
        self._group: asyncio.TaskGroup | None = None

    def prepare(self, sources: list[SourceConfig]) -> None:
        """Build every runner (connections are lazy; a bad URL or secret raises here)."""
        self.runners = self._build(dict(enumerate(sources)))

    def start(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        for runner in self.runners:
            self._launch(runner)

    def _build(self, indexed: dict[int, SourceConfig]) -> list[SourceRunner]:
        built: list[SourceRunner] = []
        try:
            for index, config in indexed.items():
                reader = open_source(config, index)
                stop = asyncio.Event()
                pollers = [
                    FeedPoller(config, entity, reader, self.outbox, stop)
                    for entity in config.entities
                ]
                built.append(SourceRunner(config, pollers, stop, reader))
        except BaseException:
            for runner in built:
                closing = asyncio.get_running_loop().create_task(_close(runner))
                _CLOSING.add(closing)  # the loop keeps only a weak reference to a task
                closing.add_done_callback(_CLOSING.discard)
            raise
        return built

    def _launch(self, runner: SourceRunner) -> None:
        assert self._group is not None
        runner.task = self._group.create_task(runner.run(), name=f"source-{runner.config.name}")

    async def replace(self, sources: list[SourceConfig]) -> tuple[list[str], list[str]]:
        """Run ``sources`` from now on: unchanged ones keep running (and their pause),
        changed and new ones start, the rest stop. Returns (started, stopped) names.
        Everything new is built before anything stops, so a bad source changes nothing."""
        running = {runner.config.name: runner for runner in self.runners}
        changed = {
            index: config
            for index, config in enumerate(sources)
            if running.get(config.name) is None or running[config.name].config != config
        }
        fresh = {runner.config.name: runner for runner in self._build(changed)}
        names = {config.name for config in sources}
        leaving = [r for r in self.runners if r.config.name in fresh or r.config.name not in names]
        for runner in leaving:
            await retire(runner)
        self.runners = [fresh.get(config.name) or running[config.name] for config in sources]
        for runner in fresh.values():
            self._launch(runner)
        return sorted(fresh), sorted(r.config.name for r in leaving)

    def stop_all(self) -> None:
        for runner in self.runners:
            runner.stop.set()

    async def close(self) -> None:
        for runner in self.runners:
            await _close(runner)


async def retire(runner: SourceRunner) -> None:
    """Stop one source after its current page and close its connections."""
    runner.stop.set()
    if runner.task is not None:
        await runner.task
    await _close(runner)


_CLOSING: set[asyncio.Task[None]] = set()
"""Readers being closed after a failed build, kept until they are."""


async def _close(runner: SourceRunner) -> None:
    if runner.reader is not None:
        await runner.reader.close()

"""``distillsync check``: the config is valid, every source answers its queries with the
columns the config names, and the relay accepts our connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.config import Config, read_secret
from agent.errors import ConfigError, DistillSyncError
from agent.publisher import RelayLink
from agent.runners import open_source
from agent.service import link_settings

Say = Callable[[str], object]


async def check_sources(config: Config, say: Say) -> list[str]:
    problems: list[str] = []
    for i, source in enumerate(config.sources):
        try:
            reader = open_source(source, i)
        except DistillSyncError as error:
            problems.append(str(error))
            continue
        try:
            for j, entity in enumerate(source.entities):
                path = f"sources[{i}].entities[{j}]"
                try:
                    columns = await reader.probe(entity)
                except DistillSyncError as error:
                    problems.append(f"{path}.query: {error}")
                    continue
                wanted = [*entity.key, *([entity.cursor] if entity.cursor else [])]
                missing = [c for c in wanted if c not in columns]
                if missing:
                    problems.append(
                        f"{path}: column {', '.join(missing)} not in the query's "
                        f"result ({', '.join(columns)})"
                    )
                else:
                    say(f"ok   source {source.name} / {entity.feed}: {', '.join(columns)}")
        finally:
            await reader.close()
    return problems


async def check_relay(config: Config, say: Say) -> list[str]:
    try:
        settings = link_settings(config)
    except ConfigError as error:  # a secret or TLS file: the problems name their keys
        return error.problems
    try:
        async with asyncio.timeout(15), RelayLink(settings) as link:
            say(
                f"ok   relay {config.relay.url}: connected as {config.client_id} "
                f"(receive maximum {link.receive_maximum}, "
                f"max packet {link.max_packet_size} bytes)"
            )
    except TimeoutError:
        plain = (
            " (a TLS port answers nothing to mqtt://)"
            if config.relay.url.startswith("mqtt://")
            else ""
        )
        return [f"relay.url: no answer from {config.relay.url} within 15s{plain}"]
    except DistillSyncError as error:
        return [f"relay.url: {error}"]
    return []


def check_api(config: Config, say: Say) -> list[str]:
    api = config.api
    if api.listen is None:
        return []
    try:
        read_secret(api.token_file, api.token_env, "api.token", api.token_credential)
    except ConfigError as error:
        return error.problems
    say(f"ok   api token for {api.listen}: readable")
    return []


async def check_all(config: Config, say: Say) -> list[str]:
    say(
        f"ok   config: agent {config.agent.tenant}/{config.agent.id}, "
        f"{len(config.sources)} source(s)"
    )
    return (
        await check_sources(config, say) + await check_relay(config, say) + check_api(config, say)
    )

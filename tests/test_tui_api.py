"""The dashboard's real source (``ApiSource`` over ``ApiClient``) against a small aiohttp
server on a unix socket that speaks the status API's shapes: paging, actions, and a stream
that ends, so the dashboard has to reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from agent.apiclient import ApiClient
from tests.tui_support import NOW, fast, frozen, text, until, updates
from tui.app import AgentDashboard
from tui.formats import clock
from tui.sources import ApiSource
from tui.widgets import Banner


class FakeApi:
    """The status API's shapes with frozen data; records what it was asked."""

    def __init__(self, dead: int = 250, inbox: int = 0) -> None:
        self.dead: list[dict[str, Any]] = [
            {
                "id": i,
                "kind": "capture",
                "source": "erp",
                "feed": "stock",
                "entity": "stock",
                "subject": f"SKU-{i}/WH1",
                "reason": "schema",
                "payload": "{}",
                "event_sequence": None,
                "created_at": NOW,
            }
            for i in range(1, dead + 1)
        ]
        self.inbox_items: list[dict[str, Any]] = [
            {"id": i, "state": "dead" if i % 3 == 0 else "pending", "payload": "{}"}
            for i in range(1, inbox + 1)
        ]
        self.afters: list[int] = []
        self.inbox_asked: list[str] = []
        self.posts: list[str] = []
        self.streams = 0
        self.resume = asyncio.Event()  # the second stream waits for it

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/stream", self.stream)
        app.router.add_get("/v1/outbox", self.outbox)
        app.router.add_get("/v1/inbox", self.inbox)
        app.router.add_post("/v1/{what}/{name}/{action}", self.act)
        return app

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.streams += 1
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        if self.streams > 1:
            await self.resume.wait()
        for line in updates(3):
            await response.write(orjson.dumps(line) + b"\n")
        while self.streams > 1:  # the first stream ends; later ones beat like the agent's
            await asyncio.sleep(0.05)
            await response.write(orjson.dumps(updates(1)[0]) + b"\n")
        return response

    async def outbox(self, request: web.Request) -> web.Response:
        if request.query.get("state") != "dead":
            return web.json_response({"error": "state is pending or dead"}, status=400)
        after, limit = int(request.query["after"]), int(request.query["limit"])
        self.afters.append(after)
        items = [item for item in self.dead if item["id"] > after][:limit]
        return web.json_response({"state": "dead", "items": items})

    async def inbox(self, request: web.Request) -> web.Response:
        """By id from the oldest, pages of at most 1000, as the agent serves them."""
        self.inbox_asked.append(request.query_string)
        state = request.query.get("state")
        after, limit = int(request.query["after"]), min(int(request.query["limit"]), 1000)
        found = [i for i in self.inbox_items if i["id"] > after and state in (None, i["state"])]
        return web.json_response({"state": state, "items": found[:limit]})

    async def act(self, request: web.Request) -> web.Response:
        self.posts.append(request.path)
        what, name = request.match_info["what"], request.match_info["name"]
        if what == "sources" and name == "erp":
            return web.json_response(
                {"source": "erp", "done": request.match_info["action"], "paused": True}
            )
        return web.json_response({"error": f"no {what} {name}"}, status=404)


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(api: FakeApi, socket: Path) -> None:
        runner = web.AppRunner(api.app(), shutdown_timeout=0.5)
        await runner.setup()
        await web.UnixSite(runner, str(socket)).start()
        runners.append(runner)

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_dead_letters_are_read_page_by_page(serve: Any, tmp_path: Path) -> None:
    api, socket = FakeApi(dead=250), tmp_path / "api.sock"
    await serve(api, socket)
    items = await ApiSource(ApiClient(socket)).dead_letters()
    assert [item.id for item in items] == list(range(1, 251))
    assert api.afters == [0, 200]
    assert items[0].subject == "SKU-1/WH1"


async def test_the_inbox_is_read_through_to_its_newest_items(serve: Any, tmp_path: Path) -> None:
    """The API pages from the oldest id: the screen wants the newest, so every page is read
    and the newest 1000 are kept, newest first, with how many there were."""
    api, socket = FakeApi(inbox=2500), tmp_path / "api.sock"
    await serve(api, socket)
    source = ApiSource(ApiClient(socket))
    found = await source.inbox(None)
    assert [item.id for item in found.items] == list(range(2500, 1500, -1))
    assert found.total == 2500
    assert api.inbox_asked == [f"after={a}&limit=1000" for a in (0, 1000, 2000)]
    dead = await source.inbox("dead")
    assert dead.items[0].id == 2499 and dead.total == 833 and len(dead.items) == 833
    assert api.inbox_asked[-1] == "state=dead&after=0&limit=1000"


async def test_actions_post_and_return_the_agents_answer(serve: Any, tmp_path: Path) -> None:
    api, socket = FakeApi(), tmp_path / "api.sock"
    await serve(api, socket)
    source = ApiSource(ApiClient(socket))
    assert await source.act("/v1/sources/erp/pause") == (
        200,
        {"source": "erp", "done": "pause", "paused": True},
    )
    assert await source.act("/v1/outbox/999/retry") == (404, {"error": "no outbox 999"})
    assert api.posts == ["/v1/sources/erp/pause", "/v1/outbox/999/retry"]


async def test_an_agent_that_cannot_list_or_is_gone_raises_oserror(
    serve: Any, tmp_path: Path
) -> None:
    with pytest.raises(OSError, match="agent unreachable at"):
        await ApiSource(ApiClient(tmp_path / "nobody.sock", timeout=1)).dead_letters()

    class Broken(FakeApi):
        async def outbox(self, request: web.Request) -> web.Response:
            return web.json_response({"error": "database is locked"}, status=500)

    await serve(Broken(), tmp_path / "api.sock")
    with pytest.raises(OSError, match=r"500 .* database is locked"):
        await ApiSource(ApiClient(tmp_path / "api.sock")).dead_letters()


async def test_the_dashboard_reconnects_to_a_real_api(serve: Any, tmp_path: Path) -> None:
    """Nobody listening, then an agent whose stream ends, then one that stays."""
    api, socket = FakeApi(), tmp_path / "api.sock"
    app = AgentDashboard(ApiSource(ApiClient(socket, timeout=1)), now=frozen, backoff=fast())
    async with app.run_test(size=(80, 24)) as pilot:
        banner, header = app.screen.query_one(Banner), app.screen.query_one("#header")
        await until(pilot, lambda: banner.has_class("-shown"), "nobody listening")
        assert text(banner).startswith(f"agent unreachable since {clock(NOW)}")
        assert str(socket) in text(banner)

        await serve(api, socket)
        await until(pilot, lambda: api.streams == 2, "the stream to end and reconnect")
        assert "erp-madrid-1" in text(header)  # the first stream's updates were shown
        await until(pilot, lambda: "closed the stream" in text(banner), "the banner")

        api.resume.set()
        await until(pilot, lambda: not banner.has_class("-shown"), "the agent back")
        await pilot.pause(0.2)  # heartbeats keep it so
        assert not banner.has_class("-shown")
        await pilot.press("q")

"""The monitor against translog's own server: content rules, promises, an honest log under load,
the webhook sink and the gossip hook."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.integration.logservers import ThreadedServer
from tests.monitor.helpers import ListSink, check_offline
from translog.client import LogClient
from translog.config import Config, LogSection, PublisherSection
from translog.core.ct import TreeHeadSigner
from translog.core.signing import NoteSigner
from translog.errors import NotFoundError, SplitViewError
from translog.formats.receipt import format_promise
from translog.formats.rules import rule_from_config
from translog.formats.verify import verify_file
from translog.http.app import make_app
from translog.log.tokens import TokenStore
from translog.monitor.alerts import Reporter, WebhookSink
from translog.monitor.config import LogConfig
from translog.monitor.follower import Follower
from translog.monitor.store import Store
from translog.storage.memory import MemoryStorage

ORIGIN = "monitor.test/log"

RULES = [
    rule_from_config(
        {
            "name": "failed-logins",
            "match": {"action": "user.login_failed"},
            "group_by": "actor.id",
            "threshold": 3,
            "window_seconds": 60,
        },
        "rule[0]",
    ),
    rule_from_config(
        {"name": "admin-role-change", "match": {"action": ["role.grant"], "role": "admin"}},
        "rule[1]",
    ),
]


def _app(signer: NoteSigner) -> tuple[web.Application, str]:
    """build_app with a 1 s merge delay, so promises fall due within a test."""
    tokens = TokenStore()
    token = tokens.create("client", ("submit", "read"))
    config = Config(
        log=LogSection(origin=signer.name),
        publisher=PublisherSection(interval_ms=50, max_merge_delay_ms=1000),
    )
    app = make_app(
        config,
        storage=MemoryStorage(),
        signer=signer,
        tree_head_signer=TreeHeadSigner.generate(),
        tokens=tokens,
    )
    return app, token


@pytest.fixture
def served() -> tuple[ThreadedServer, NoteSigner, str]:  # type: ignore[misc]
    signer = NoteSigner.generate(ORIGIN)
    app, token = _app(signer)
    server = ThreadedServer(app).start()
    yield server, signer, token
    server.stop()


def _event(action: str, actor: str, **extra: object) -> bytes:
    return json.dumps({"action": action, "actor": {"type": "user", "id": actor}, **extra}).encode()


async def _submit(url: str, vkey: str, token: str, payloads: list[bytes]) -> None:
    async with LogClient(url, vkey, token=token) as c:
        await c.submit_batch(payloads)


async def test_content_rules_fire_with_evidence(
    served: tuple[ThreadedServer, NoteSigner, str], tmp_path: Path
) -> None:
    server, signer, token = served
    events = [
        _event("user.login_failed", "alice"),
        _event("user.login_failed", "bob"),
        _event("user.login", "alice"),
        _event("user.login_failed", "alice"),
        _event("user.login_failed", "alice"),
        _event("role.grant", "carol", role="viewer"),
        _event("user.login_failed", "alice"),  # the 4th of alice: more than 3
        _event("role.grant", "carol", role="admin"),
    ]
    await _submit(server.url, signer.vkey, token, events)
    await asyncio.sleep(0.2)  # published
    store = Store(tmp_path / "state.sqlite")
    sink = ListSink()
    cfg = LogConfig(name="t", url=server.url, vkey=signer.vkey, read_token=token)
    f = Follower(cfg, Reporter(tmp_path / "ev", [sink], store), store, rules=RULES)
    try:
        alerts = await f.poll()
        assert sorted(a.details["rule"] for a in alerts) == ["admin-role-change", "failed-logins"]
        failed = next(a for a in alerts if a.details["rule"] == "failed-logins")
        assert failed.details["indexes"] == [0, 3, 4, 6]
        assert failed.severity == "content"
        for a in alerts:
            lines = check_offline(a, signer.vkey)
            assert lines[0].startswith("ok: evidence (content_rule, proven)"), lines
        # A window survives a restart: two more failures of bob, then a third, fire later.
        await _submit(server.url, signer.vkey, token, [_event("user.login_failed", "bob")] * 2)
        await asyncio.sleep(0.2)
        assert await f.poll() == []
        await f.close()
        store.close()
        store = Store(tmp_path / "state.sqlite")
        f = Follower(cfg, Reporter(tmp_path / "ev", [sink], store), store, rules=RULES)
        await _submit(server.url, signer.vkey, token, [_event("user.login_failed", "bob")])
        await asyncio.sleep(0.2)
        (alert,) = await f.poll()
        assert alert.details["indexes"] == [1, 8, 9, 10]
    finally:
        await f.close()
        store.close()


async def test_content_rules_need_the_read_token_for_committed_payloads(
    served: tuple[ThreadedServer, NoteSigner, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, signer, token = served
    await _submit(server.url, signer.vkey, token, [_event("role.grant", "x", role="admin")])
    await asyncio.sleep(0.2)
    store = Store(tmp_path / "state.sqlite")
    cfg = LogConfig(name="t", url=server.url, vkey=signer.vkey)  # no read token
    f = Follower(cfg, Reporter(tmp_path / "ev", [], store), store, rules=RULES)
    try:
        assert await f.poll() == []
        assert "set read_token" in capsys.readouterr().err
        assert store.log("t") is not None  # the tree itself verified
    finally:
        await f.close()
        store.close()


async def test_honest_log_under_load_raises_nothing(
    served: tuple[ThreadedServer, NoteSigner, str], tmp_path: Path
) -> None:
    """Continuous submissions and ?wait=0 promises for a bounded run: zero alerts."""
    server, signer, token = served
    pdir = tmp_path / "promises"
    pdir.mkdir()
    stop = threading.Event()
    submitted = [0]

    def load() -> None:
        async def go() -> None:
            async with LogClient(server.url, signer.vkey, token=token) as c:
                i = 0
                while not stop.is_set():
                    batch = [_event("user.login_failed", f"u{i + k}") for k in range(20)]
                    await c.submit_batch(batch)
                    p = await c.promise(_event("deploy", f"svc{i}"))
                    (pdir / f"p{i}.json").write_text(json.dumps(format_promise(p)))
                    submitted[0] += 21
                    i += 20
                    await asyncio.sleep(0.05)

        asyncio.run(go())

    thread = threading.Thread(target=load)
    thread.start()
    store = Store(tmp_path / "state.sqlite")
    sink = ListSink()
    cfg = LogConfig(
        name="t",
        url=server.url,
        vkey=signer.vkey,
        read_token=token,
        interval_seconds=0.1,
        stale_after_intervals=100,  # 10 s: the server shares this process (GIL)
        promises_dir=pdir,
        promise_grace_seconds=0.5,
    )
    f = Follower(cfg, Reporter(tmp_path / "ev", [sink], store), store, rules=RULES)
    try:
        deadline = time.monotonic() + 3
        polls = 0
        while time.monotonic() < deadline:
            await f.poll()
            polls += 1
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.to_thread(thread.join, 30)
        await asyncio.sleep(2)  # every promise past its deadline (1 s) and grace (0.5 s)
        await f.poll()
        assert [a.message for a in sink.alerts] == []
        state = store.log("t")
        assert state is not None and state.size >= submitted[0] > 200
        assert store.promises("t") == [] and len(store.promises("t", "kept")) >= 5
        assert polls >= 5
    finally:
        stop.set()
        thread.join(30)
        await f.close()
        store.close()


async def test_webhook_retries_then_delivers(tmp_path: Path) -> None:
    got: list[dict[str, object]] = []
    calls = [0]

    async def hook(request: web.Request) -> web.Response:
        calls[0] += 1
        if calls[0] <= 2:
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = ThreadedServer(app).start()
    store = Store(tmp_path / "state.sqlite")
    try:
        sink = WebhookSink(server.url + "/hook", store, retries=3)
        sink.backoff_base = 0.01
        reporter = Reporter(tmp_path / "ev", [sink], store)
        await reporter.raise_alert(
            kind="unavailable",
            log="t",
            origin="o",
            url="u",
            fingerprint="1",
            message="m",
            evidence=None,
        )
        await sink.flush()
        assert calls[0] == 3 and [g["alert"] for g in got] == ["unavailable"]
        assert store.outbox() == []
        await sink.close()
    finally:
        store.close()
        server.stop()


async def test_webhook_outbox_survives_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    sink = WebhookSink("http://127.0.0.1:9/hook", store, retries=0)
    reporter = Reporter(tmp_path / "ev", [sink], store)
    await reporter.raise_alert(
        kind="stale", log="t", origin="o", url="u", fingerprint="1", message="m", evidence=None
    )
    await sink.close()
    assert len(store.outbox()) == 1
    store.close()
    got: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.json())["alert"])
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = ThreadedServer(app).start()
    store = Store(tmp_path / "state.sqlite")
    try:
        sink = WebhookSink(server.url + "/hook", store)
        await sink.flush()
        assert got == ["stale"] and store.outbox() == []
        await sink.close()
    finally:
        store.close()
        server.stop()


async def test_gossip_hook_split_view(
    served: tuple[ThreadedServer, NoteSigner, str], tmp_path: Path
) -> None:
    """check_foreign: a consistent checkpoint passes; another view raises with evidence."""
    from translog.monitor.config import MonitorConfig, OutputConfig
    from translog.monitor.monitor import Monitor

    server, signer, token = served
    await _submit(server.url, signer.vkey, token, [_event("a", str(i)) for i in range(40)])
    await asyncio.sleep(0.2)
    cfg = MonitorConfig(
        tmp_path / "state.sqlite",
        tmp_path / "ev",
        (LogConfig(name="t", url=server.url, vkey=signer.vkey, read_token=token),),
        OutputConfig(stdout=False),
    )
    mon = Monitor(cfg, sinks=[])
    try:
        await mon.poll_all()
        (cp,) = mon.latest_verified().values()
        assert cp.size == 40
        await _submit(server.url, signer.vkey, token, [_event("b", "1")])
        await asyncio.sleep(0.2)
        async with LogClient(server.url, signer.vkey) as c:
            newer = await c.checkpoint()
        assert (await mon.check_foreign(ORIGIN, newer.note)).size == 41
        await mon.poll_all()
        assert mon.latest_verified()[ORIGIN].size == 41
        # Other views of the same log: same key, other entries.
        for count, kind in ((30, "fork"), (41, "same_size_different_root"), (45, None)):
            other_app, other_token = _app(signer)
            other = ThreadedServer(other_app).start()
            try:
                payloads = [_event("x", str(i)) for i in range(count)]
                await _submit(other.url, signer.vkey, other_token, payloads)
                await asyncio.sleep(0.2)
                async with LogClient(other.url, signer.vkey) as c:
                    forked = await c.checkpoint()
            finally:
                other.stop()
            if kind is None:
                # Larger than anything the followed log serves: nothing to conclude yet.
                with pytest.raises(NotFoundError, match="cannot judge"):
                    await mon.check_foreign(ORIGIN, forked.note, source="witness w1")
                continue
            with pytest.raises(SplitViewError) as err:
                await mon.check_foreign(ORIGIN, forked.note, source="witness w1")
            assert err.value.evidence is not None
            obj = json.loads(err.value.evidence.read_text())
            assert obj["kind"] == kind and "witness w1" in obj["reason"]
            lines = verify_file(err.value.evidence.read_bytes(), signer.vkey).lines()
            assert lines[0].startswith(f"ok: evidence ({kind}, proven)")
    finally:
        await mon.close()

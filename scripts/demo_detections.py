"""Show every monitor detection firing against the malicious test log, with real output.

``python scripts/demo_detections.py [DIR]``: for each misbehaviour of the fixture in
tests/monitor/fakelog.py (fork, same size with another root, replayed checkpoint, rewritten
tile, dropped and reordered entries, bad signature, stale, unreachable, broken promise) and a
content rule on translog's own server, it prints the alert's JSON line and the output of
``translog verify EVIDENCE --vkey VKEY`` (run as a subprocess, offline). Evidence files are
kept in DIR (default: a temporary directory).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.monitor.fakelog import TileLog, inline_leaf, promise_json  # noqa: E402
from tests.monitor.helpers import Rig, make_log  # noqa: E402
from translog.monitor.alerts import Alert  # noqa: E402

Scenario = Callable[[Path], Awaitable[tuple[list[Alert], str]]]


def _verify(evidence: Path, vkey: str) -> str:
    exe = Path(sys.executable).parent / "translog"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "translog"]
    done = subprocess.run(
        [*cmd, "verify", str(evidence), "--vkey", vkey], capture_output=True, text=True
    )
    return (done.stdout + done.stderr).rstrip() + f"\n(exit {done.returncode})"


async def _rig(tmp: Path, n: int = 300, **cfg: object) -> Rig:
    r = Rig(tmp, make_log(n), **cfg)  # type: ignore[arg-type]
    assert await r.poll() == []
    return r


async def fork(tmp: Path) -> tuple[list[Alert], str]:
    r = await _rig(tmp)
    other = TileLog(r.server.log.key, r.server.log.leaves[:200])
    other.add(*[f"other {i}".encode() for i in range(150)])
    r.server.other = other
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def same_size(tmp: Path) -> tuple[list[Alert], str]:
    r = await _rig(tmp)
    r.server.other = TileLog(r.server.log.key, [*r.server.log.leaves[:299], b"changed"])
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def rollback(tmp: Path) -> tuple[list[Alert], str]:
    r = await _rig(tmp)
    r.server.checkpoint_override = r.server.log.checkpoint(100)
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def tile(tmp: Path) -> tuple[list[Alert], str]:
    r = await _rig(tmp)
    r.server.log.add(*[f"new {i}".encode() for i in range(300)])
    good = r.server.log.resources()["tile/0/001"]
    r.server.tile_overrides["tile/0/001"] = good[:64] + bytes(32) + good[96:]
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def dropped(tmp: Path) -> tuple[list[Alert], str]:
    r = await _rig(tmp)
    r.server.log.add(*[f"new {i}".encode() for i in range(100)])
    r.server.bundle_filter = lambda path, es: [e for e in es if e != b"new 50"]
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def reordered(tmp: Path) -> tuple[list[Alert], str]:
    r = Rig(tmp, make_log(300))
    r.server.bundle_filter = lambda path, es: (
        [es[1], es[0], *es[2:]] if path == "tile/entries/000" else es
    )
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def bad_signature(tmp: Path) -> tuple[list[Alert], str]:
    r = Rig(tmp, make_log(300))
    r.server.checkpoint_override = r.server.log.checkpoint().replace(b"\n300\n", b"\n301\n")
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def stale(tmp: Path) -> tuple[list[Alert], str]:
    r = await _rig(tmp, 10, interval_seconds=0.05, stale_after_intervals=3)
    r.server.frozen = r.server.log.checkpoint()
    r.server.log.add(b"never published")
    await asyncio.sleep(0.3)
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def unavailable(tmp: Path) -> tuple[list[Alert], str]:
    r = await _rig(tmp)
    r.server.down = True
    try:
        alerts = [a for _ in range(3) for a in await r.poll()]
        return alerts, r.cfg.vkey
    finally:
        await r.close()


async def broken_promise(tmp: Path) -> tuple[list[Alert], str]:
    log = make_log(0)
    t0 = int(time.time() * 1000) - 60_000
    log.add(*[inline_leaf(t0 + i, {"n": i}) for i in range(20)])
    log.add(inline_leaf(t0 + 20, {"n": 20}), inline_leaf(t0 + 21, {"n": 21}))
    promised = inline_leaf(t0 + 20, {"action": "deploy", "promised": True})
    pdir = tmp / "promises"
    pdir.mkdir()
    (pdir / "p.json").write_text(json.dumps(promise_json(log.key, promised, t0 + 20, t0 + 10_020)))
    r = Rig(tmp, log, promises_dir=pdir, promise_grace_seconds=0)
    try:
        return await r.poll(), r.cfg.vkey
    finally:
        await r.close()


async def content_rule(tmp: Path) -> tuple[list[Alert], str]:
    from tests.integration.logservers import ThreadedServer
    from tests.monitor.helpers import ListSink
    from tests.monitor.test_translog_log import RULES, _app, _event, _submit
    from translog.core.signing import NoteSigner
    from translog.monitor.alerts import Reporter
    from translog.monitor.config import LogConfig
    from translog.monitor.follower import Follower
    from translog.monitor.store import Store

    signer = NoteSigner.generate("demo.example/log")
    app, token = _app(signer)
    server = ThreadedServer(app).start()
    try:
        events = [_event("user.login_failed", "alice") for _ in range(4)]
        events.append(_event("role.grant", "carol", role="admin"))
        await _submit(server.url, signer.vkey, token, events)
        await asyncio.sleep(0.3)
        store = Store(tmp / "state.sqlite")
        cfg = LogConfig(name="demo", url=server.url, vkey=signer.vkey, read_token=token)
        f = Follower(cfg, Reporter(tmp / "ev", [ListSink()], store), store, rules=RULES)
        try:
            return await f.poll(), signer.vkey
        finally:
            await f.close()
            store.close()
    finally:
        server.stop()


SCENARIOS: dict[str, Scenario] = {
    "fork (two views)": fork,
    "same size, different root": same_size,
    "rollback (replayed old checkpoint)": rollback,
    "rewritten tile": tile,
    "dropped entry": dropped,
    "reordered entries": reordered,
    "bad signature": bad_signature,
    "stale log (stopped refreshing)": stale,
    "unreachable log": unavailable,
    "broken promise": broken_promise,
    "content rules": content_rule,
}


async def main(out: Path) -> None:
    for i, (name, scenario) in enumerate(SCENARIOS.items()):
        tmp = out / f"{i:02d}"
        tmp.mkdir(parents=True)
        alerts, vkey = await scenario(tmp)
        print(f"### {name}")
        for alert in alerts:
            print(f"$ alert\n{alert.line()}")
            if alert.evidence is not None:
                print(f"$ translog verify {alert.evidence.name} --vkey $VKEY")
                print(_verify(alert.evidence, vkey))
        print()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="demo-"))
    asyncio.run(main(target))

"""The audit story end to end through the CLI: events in, a failure query, an export by query
with its summary, offline verification, an erasure, and verification again."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.events.helpers import events_config, make_events
from tests.integration.logservers import ThreadedServer
from translog.cli.command import main
from translog.client import SyncLogClient
from translog.core.signing import NoteSigner
from translog.formats.bundle_json import parse_bundle
from translog.http.app import make_app
from translog.log.tokens import TokenStore
from translog.storage.memory import MemoryStorage


@pytest.fixture
def story(tmp_path: Path) -> tuple[ThreadedServer, str, dict[str, str]]:
    signer = NoteSigner.generate("events.example/log")
    tokens = TokenStore()
    names = {
        "submit": tokens.create("app", ("submit",)),
        "read": tokens.create("auditor", ("read",), tenants=("acme",)),
        "admin": tokens.create("dpo", ("admin",), tenants=("*",)),
    }
    app = make_app(events_config(), storage=MemoryStorage(), signer=signer, tokens=tokens)
    server = ThreadedServer(app).start()
    yield server, signer.vkey, names
    server.stop()


def test_story(
    story: tuple[ThreadedServer, str, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, vkey, tokens = story
    events = make_events(300, seed=11)
    with SyncLogClient(server.url, vkey, token=tokens["submit"]) as client:
        for k in range(0, 300, 100):
            client.submit_batch(
                [json.dumps(e).encode() for e in events[k : k + 100]],
                idempotency_keys=[e["id"] for e in events[k : k + 100]],
            )
    server.run(server.log.publish())
    failures = [
        i
        for i, e in enumerate(events)
        if e["tenant"] == "acme"
        and e["action"] == "user.login"
        and e["outcome"]["result"] == "failure"
    ]
    assert len(failures) > 5
    common = ["--url", server.url, "--vkey", vkey]
    bundle_path = tmp_path / "failures.bundle.json.gz"
    html_path = tmp_path / "summary.html"
    failure_export = [
        "export",
        *common,
        "--read-token",
        tokens["read"],
        "--from",
        "0",
        "--to",
        "4102444800000",
        "--tenant",
        "acme",
        "--query",
        "action=user.login,outcome=failure",
    ]
    capsys.readouterr()
    assert (
        main(
            [
                *failure_export,
                "--summary-html",
                str(html_path),
                "-q",
                "-o",
                str(bundle_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"selection: {len(failures)} entries match tenant=acme" in out
    bundle = parse_bundle(bundle_path.read_bytes())
    assert bundle.selection is not None and list(bundle.selection.indexes) == failures
    assert bundle.summary is not None and bundle.summary["matched"] == len(failures)
    assert bundle.summary["counts"]["outcome"] == {"failure": len(failures)}
    # only the selected payloads left the log
    present = [e.index for e in bundle.entries if e.payload_status == "present"]
    assert present == failures
    page = html_path.read_text()
    assert "Audit evidence summary" in page and f"{len(failures)} (0 erased)" in page

    assert main(["verify", str(bundle_path), "--vkey", vkey]) == 0
    out = capsys.readouterr().out
    assert "selection:" in out and "summary: recomputed from the bundle" in out

    # tampering: hide one match from the selection, or change a count in the summary
    raw = json.loads(gzip.decompress(bundle_path.read_bytes()))
    hidden = dict(raw, selection={**raw["selection"], "indexes": failures[1:]})
    (tmp_path / "hidden.json").write_text(json.dumps(hidden))
    assert main(["verify", str(tmp_path / "hidden.json"), "--vkey", vkey]) == 3
    assert "matches the query but is not selected" in capsys.readouterr().err
    forged = dict(raw, summary={**raw["summary"], "matched": len(failures) - 1})
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    assert main(["verify", str(tmp_path / "forged.json"), "--vkey", vkey]) == 3
    assert "bundle.summary.matched" in capsys.readouterr().err

    # erase one of the failures (a data subject's request); the old bundle still verifies
    victim = failures[0]
    assert (
        main(
            [
                "erase",
                "--url",
                server.url,
                "--token",
                tokens["admin"],
                "--index",
                str(victim),
                "--reason",
                "DSR-2026-0042",
            ]
        )
        == 0
    )
    assert "erased 1 payloads" in capsys.readouterr().out
    assert main(["verify", str(bundle_path), "--vkey", vkey]) == 0
    again = tmp_path / "after.bundle.json"
    assert (
        main(
            [
                *failure_export,
                "--summary",
                "-q",
                "-o",
                str(again),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["verify", str(again), "--vkey", vkey]) == 0
    after = parse_bundle(again.read_bytes())
    # the erased event no longer shows what it was, so it is no longer a match; its leaf is
    # still in the complete period, and the log says who erased it, when and why
    assert after.summary is not None and after.summary["matched"] == len(failures) - 1
    assert victim not in after.selection.indexes if after.selection else False
    statuses = {e.index: e.payload_status for e in after.entries}
    assert (
        statuses[victim] == "withheld" and after.entries[victim].leaf == bundle.entries[victim].leaf
    )
    assert main(["summary", str(again), "--vkey", vkey, "--html", str(tmp_path / "s2.html")]) == 0

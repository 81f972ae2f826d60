"""Show that erased payloads give their disk pages back: `python scripts/erasure_reclaim.py`."""

from __future__ import annotations

import asyncio
import os
import tempfile

from translog.core.signing import NoteSigner
from translog.formats.event_builder import build_event, encode_event
from translog.log import retention as rt
from translog.log.event_index import EventIndexer
from translog.log.sequencer import Log
from translog.storage.lmdb import LMDBStorage


async def main() -> None:
    d = tempfile.mkdtemp()
    st = LMDBStorage(d, map_size=1 << 30)
    log = Log(st, "r.example/log", NoteSigner.generate("r.example/log"), indexer=EventIndexer())
    await log.start()

    def big(seed: int) -> list[bytes]:
        return [
            encode_event(
                build_event(
                    "file.upload",
                    actor=("user", f"u{seed}"),
                    category="data_access",
                    tenant="acme",
                    service="files",
                    details={"blob": "x" * 16000},
                )
            )
            for _ in range(1000)
        ]

    def used() -> tuple[int, int]:
        return (st.raw_env().info()["last_pgno"] + 1) * 4096, os.path.getsize(
            os.path.join(d, "data.mdb")
        )

    await log.submit(big(1))
    a = used()
    plan = rt.plan_erasure(st, list(range(1000)), size=log.size, in_force=[])
    await log.on_writer(
        lambda: rt.apply_erasure(
            st, plan, by="t", reason="r", at=1, erasure_entry=None, kind="request"
        )
    )
    b = used()
    await log.submit(big(2))
    c = used()
    await log.submit(big(3))
    e = used()
    print(f"1000 x 16 KB events: pages in use {a[0] / 1e6:.1f} MB (file {a[1] / 1e6:.1f} MB)")
    print(f"after erasing them:  pages in use {b[0] / 1e6:.1f} MB")
    print(
        f"+1000 more:          pages in use {c[0] / 1e6:.1f} MB (file {c[1] / 1e6:.1f} MB)"
        "  <- reused the erased pages"
    )
    print(
        f"+1000 more again:    pages in use {e[0] / 1e6:.1f} MB (file {e[1] / 1e6:.1f} MB)"
        "  <- grows again, nothing free"
    )
    await log.close()


asyncio.run(main())

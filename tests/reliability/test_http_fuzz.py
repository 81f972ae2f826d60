"""Hypothesis-generated paths, tile paths and query parameters against ``translog serve``.

Every GET route is requested with mutated path segments and arbitrary query parameters
(names, repeated names, values with any characters, percent-encoded bytes), with and without
a token. The property: never a 5xx; every 4xx is the JSON ``{"error", "reason"}`` shape.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.reliability.harness import LogDir, ServerProcess, make_log

pytestmark = pytest.mark.system

ROUTES = [
    "/checkpoint",
    "/tile/{}",
    "/tile/entries/{}",
    "/entries/{}",
    "/entries/{}/payload",
    "/ct/v1/get-sth",
    "/ct/v1/get-sth-consistency",
    "/ct/v1/get-proof-by-hash",
    "/ct/v1/get-entries",
    "/ct/v1/get-entry-and-proof",
    "/",
    "/healthz",
    "/metrics",
]
PARAMS = [
    "first", "second", "start", "end", "tree_size", "leaf_index", "hash", "leaf_only", "wait",
    "kind",
]  # fmt: skip

segments = st.one_of(
    st.sampled_from(["0", "1", "000", "x001/234", "0/000", "0/000.p/1", "1/000.p/255", "2"]),
    st.from_regex(r"[0-9x./p]{1,24}", fullmatch=True),
    st.text(min_size=1, max_size=30),
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
)
values = st.one_of(  # already percent-encoded for the query string
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
    st.text(max_size=60).map(urllib.parse.quote),
    st.binary(max_size=40).map(urllib.parse.quote_from_bytes),
    st.from_regex(r"(%[0-9A-Fa-fzZ]{0,2}|[A-Za-z0-9+=])*", fullmatch=True),
    st.sampled_from(["", "0", "1", "A" * 43 + "=", "+" * 44, "9" * 30]).map(urllib.parse.quote),
)
queries = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), st.text(max_size=10)), values))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LogDir, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("httpfuzz")
    log = make_log(tmp / "data")
    server = ServerProcess(log, tmp, "httpfuzz")
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = "\n".join(['"ZXZlbnQx"', '"ZXZlbnQy"', '"ZXZlbnQz"'])
    headers = {"Authorization": f"Bearer {log.token}", "Content-Type": "application/x-ndjson"}
    conn.request("POST", "/add-batch?wait=published", body=body, headers=headers)
    assert conn.getresponse().status == 200
    conn.close()
    yield log, server
    server.stop()
    assert "Traceback" not in server.output()


@given(route=st.sampled_from(ROUTES), segment=segments, query=queries, auth=st.booleans())
def test_paths_and_queries(
    served: tuple[LogDir, ServerProcess],
    route: str,
    segment: str,
    query: list[tuple[str, str]],
    auth: bool,
) -> None:
    log, server = served
    path = route.format(urllib.parse.quote(segment, safe="/")) if "{}" in route else route
    qs = "&".join(f"{urllib.parse.quote(k)}={v}" for k, v in query)
    target = path + ("?" + qs if qs else "")
    headers = {"Authorization": f"Bearer {log.token}"} if auth else {}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (target, resp.status, data[:200])
    if resp.status >= 400:
        body = json.loads(data)
        assert set(body) == {"error", "reason"}, (target, body)

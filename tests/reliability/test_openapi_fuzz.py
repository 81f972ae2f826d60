"""Schemathesis, driven by the served OpenAPI document, against ``translog serve``.

Every operation in translog/http/openapi.json gets generated requests (valid and invalid
parameters, bodies, headers), with a submit+read token. Checks: no 5xx, every status and
content type is one the document declares, and every response body matches its schema.
Bounded by ``max_examples`` per operation (the ``soak`` hypothesis profile runs more).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import translog.http
from tests.reliability.harness import LogDir, ServerProcess, make_log

pytestmark = pytest.mark.system

DOCUMENT = json.loads(Path(translog.http.__file__).with_name("openapi.json").read_text())
MAX_EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "soak" else 10
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES
)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """One JSON value per line: the batch body format of /add-batch."""
    values = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(v) for v in values).encode()


@schemathesis.serializer("application/x-protobuf")
def _protobuf(ctx: Any, value: Any) -> bytes:
    """Bytes as they are (POST /v1/logs): what is not a protobuf request must be a clean 400."""
    if isinstance(value, bytes):
        return value
    return json.dumps(value).encode()


CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LogDir, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("openapi")
    log = make_log(tmp / "data")
    server = ServerProcess(log, tmp, "openapi")
    server.start()
    yield log, server
    server.stop()
    assert "Traceback" not in server.output()


@schema.parametrize()
def test_every_operation_conforms(case: Any, served: tuple[LogDir, ServerProcess]) -> None:
    log, server = served
    headers = {"Authorization": f"Bearer {log.token}"}
    if case.headers:
        headers = {**headers, **case.headers}
    response = case.call(base_url=server.url, headers=headers, timeout=30)
    case.validate_response(response, checks=CHECKS)

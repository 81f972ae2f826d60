"""Kubernetes audit events (``audit.k8s.io/v1``) onto ``translog.event/v1``. Pure.

The API server's webhook backend (``--audit-webhook-config-file``) POSTs an ``EventList``
(JSON) of ``Event`` objects, the types of ``k8s.io/apiserver/pkg/apis/audit/v1``.
:func:`parse_event_list` checks the list and maps each Event onto one event
(docs/EVENTS.md, "Kubernetes audit webhook"); the Event itself is kept, unchanged, in
``details.k8s_audit``. Errors name the item and field (``items[3].auditID: missing``) and
nothing of a refused list is submitted.

The idempotency key of an Event is ``k8s-audit:<auditID>:<stage>``: one request yields one
Event per stage (``RequestReceived``, ``ResponseStarted``, ``ResponseComplete``, ``Panic``)
with the same ``auditID``, each is its own entry, and a webhook retry of any of them is
answered with the entry it made the first time.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from translog.core.jsonfields import strict_json
from translog.errors import MalformedError, TooLargeError
from translog.formats.batch import Batch
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import MAX_EVENT_BYTES, SCHEMA, validate_event
from translog.formats.ingest_common import (
    action_segment,
    clean_text,
    encode_json,
    keep_original,
    rfc3339_ms,
)

API_VERSION = "audit.k8s.io/v1"
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
"""The stages of ``audit.k8s.io/v1`` (``Event.stage``)."""
READ_VERBS = frozenset({"get", "list", "watch"})
_LARGE = ("requestObject", "responseObject")
"""Dropped from the kept Event (their SHA-256 stays) when it does not fit in an event."""


def parse_event_list(body: bytes, *, tenant: str, service: str, max_entries: int) -> Batch:
    """The entries of an ``EventList`` body: canonical event payloads, their idempotency keys
    and labels ``items[i]``. MalformedError (400) / TooLargeError (413) naming what is wrong."""
    try:
        doc = strict_json(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MalformedError(f"body: not valid UTF-8 at byte {e.start}") from e
    except RecursionError as e:
        raise MalformedError("body: JSON nested too deeply") from e
    except ValueError as e:
        raise MalformedError(f"body: invalid JSON: {str(e)[:120]}") from e
    if not isinstance(doc, dict):
        raise MalformedError("body: expected an audit.k8s.io/v1 EventList object")
    if doc.get("kind") != "EventList":
        raise MalformedError(f'kind: expected "EventList", got {str(doc.get("kind"))[:40]!r}')
    if doc.get("apiVersion") != API_VERSION:
        raise MalformedError(
            f"apiVersion: expected {API_VERSION!r}, got {str(doc.get('apiVersion'))[:40]!r}"
        )
    items = doc.get("items", [])
    if items is None:
        items = []
    if not isinstance(items, list):
        raise MalformedError("items: expected an array of Event objects")
    if len(items) > max_entries:
        raise TooLargeError(f"EventList of {len(items)} events exceeds the limit of {max_entries}")
    payloads: list[bytes] = []
    keys: list[str | None] = []
    labels: list[str] = []
    for i, item in enumerate(items):
        where = f"items[{i}]"
        event, key = map_event(item, where, tenant=tenant, service=service)
        payloads.append(event)
        keys.append(key)
        labels.append(where)
    return Batch(payloads, keys, labels)


def _string(obj: Mapping[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise MalformedError(f"{where}.{name}: missing")
        return None
    if not isinstance(value, str):
        raise MalformedError(f"{where}.{name}: expected a string")
    return value


def _object(obj: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedError(f"{where}.{name}: expected an object")
    return value


def map_event(item: object, where: str, *, tenant: str, service: str) -> tuple[bytes, str]:
    """One ``audit.k8s.io/v1`` Event: its event payload and idempotency key."""
    if not isinstance(item, dict):
        raise MalformedError(f"{where}: expected an Event object")
    kind = item.get("kind", "Event")
    if kind != "Event":
        raise MalformedError(f'{where}.kind: expected "Event", got {str(kind)[:40]!r}')
    if item.get("apiVersion", API_VERSION) != API_VERSION:
        raise MalformedError(f"{where}.apiVersion: expected {API_VERSION!r}")
    audit_id = _string(item, "auditID", where, required=True)
    assert audit_id is not None
    if not 1 <= len(audit_id) <= 128 or not all(" " < c <= "~" for c in audit_id):
        raise MalformedError(f"{where}.auditID: expected 1-128 printable ASCII characters")
    stage = _string(item, "stage", where, required=True)
    if stage not in STAGES:
        raise MalformedError(f"{where}.stage: expected one of {', '.join(STAGES)}")
    verb = _string(item, "verb", where, required=True) or ""
    user = _object(item, "user", where)
    username = _string(user, "username", f"{where}.user", required=False) or ""
    groups = user.get("groups")
    if groups is not None and not (
        isinstance(groups, list) and all(isinstance(g, str) for g in groups)
    ):
        raise MalformedError(f"{where}.user.groups: expected an array of strings")
    ref = _object(item, "objectRef", where)
    for name in ("resource", "namespace", "name", "apiGroup", "subresource"):
        _string(ref, name, f"{where}.objectRef", required=False)
    status = _object(item, "responseStatus", where)
    code = status.get("code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise MalformedError(f"{where}.responseStatus.code: expected an integer")
    when = None
    for name in ("stageTimestamp", "requestReceivedTimestamp"):
        text = _string(item, name, where, required=False)
        if text is not None:
            when = rfc3339_ms(text)
            if when is None:
                raise MalformedError(
                    f"{where}.{name}: expected an RFC 3339 time, got {text[:40]!r}"
                )
            break
    if when is None:
        raise MalformedError(f"{where}.stageTimestamp: missing")
    ips = item.get("sourceIPs")
    if ips is not None and not (isinstance(ips, list) and all(isinstance(x, str) for x in ips)):
        raise MalformedError(f"{where}.sourceIPs: expected an array of strings")
    agent = _string(item, "userAgent", where, required=False)
    annotations = _object(item, "annotations", where)

    event: dict[str, Any] = {
        "schema": SCHEMA,
        "id": f"{audit_id}/{stage}",
        "time": when,
        "actor": _actor(username),
        "action": _action(ref, verb),
        "category": _category(ref, verb),
        "targets": _targets(ref),
        "outcome": _outcome(stage, code, status, annotations),
        "request_id": audit_id,
        "tenant": tenant,
        "service": service,
    }
    source: dict[str, str] = {}
    if ips:
        with contextlib.suppress(ValueError):
            source["ip"] = str(ipaddress.ip_address(ips[0]))
    if agent:
        source["user_agent"] = clean_text(agent, 1024)
    if source:
        event["source"] = source
    event["details"] = keep_original("k8s_audit", item)
    payload = encode_event(event)
    if len(payload) > MAX_EVENT_BYTES:
        payload = _shrunk(event, item, where)
    validate_event(strict_json(payload), f"{where}: event")
    return payload, f"k8s-audit:{audit_id}:{stage}"


def _shrunk(event: dict[str, Any], item: Mapping[str, Any], where: str) -> bytes:
    """The event without the Event's request and response objects (their digest stays)."""
    kept = {k: v for k, v in item.items() if k not in _LARGE}
    digest = hashlib.sha256(encode_json(item).encode()).hexdigest()
    event["details"] = {
        **keep_original("k8s_audit", kept),
        "k8s_audit_omitted": [k for k in _LARGE if k in item],
        "k8s_audit_sha256": digest,
    }
    payload = encode_event(event)
    if len(payload) > MAX_EVENT_BYTES:
        raise TooLargeError(
            f"{where}: the Event maps to {len(payload)} bytes even without requestObject and "
            f"responseObject; an event is at most {MAX_EVENT_BYTES} bytes"
        )
    return payload


def _actor(username: str) -> dict[str, str]:
    if username.startswith("system:serviceaccount:"):
        kind = "service_account"
    elif username.startswith("system:node:"):
        kind = "node"
    elif username.startswith("system:"):
        kind = "system"
    else:
        kind = "user"
    return {"type": kind, "id": clean_text(username) or "system:unknown"}


def _action(ref: Mapping[str, Any], verb: str) -> str:
    """``k8s.<resource>[.<subresource>].<verb>``; ``k8s.nonresource.<verb>`` without objectRef."""
    verb_seg = action_segment(verb, "unknown")
    resource = ref.get("resource")
    if not resource:
        return f"k8s.nonresource.{verb_seg}"
    parts = ["k8s", action_segment(resource, "unknown")]
    if ref.get("subresource"):
        parts.append(action_segment(ref["subresource"], "unknown"))
    return ".".join([*parts, verb_seg])


def _category(ref: Mapping[str, Any], verb: str) -> str:
    group = ref.get("apiGroup") or ""
    if group == "rbac.authorization.k8s.io" and verb not in READ_VERBS:
        return "authorization"
    if group in ("authentication.k8s.io", "authorization.k8s.io"):
        return "authentication" if group == "authentication.k8s.io" else "authorization"
    if verb in READ_VERBS:
        return "data_access"
    return "api_activity"


def _targets(ref: Mapping[str, Any]) -> list[dict[str, str]]:
    """The object (``<resource>/<namespace>/<name>``, or ``<resource>/<name>`` cluster-wide)
    and its namespace."""
    out = []
    resource, namespace, name = ref.get("resource"), ref.get("namespace"), ref.get("name")
    if resource and name:
        path = f"{resource}/{namespace}/{name}" if namespace else f"{resource}/{name}"
        out.append({"type": "k8s_object", "id": clean_text(path), "name": clean_text(name)})
    if namespace:
        out.append({"type": "k8s_namespace", "id": clean_text(namespace)})
    return out


def _outcome(
    stage: str, code: object, status: Mapping[str, Any], annotations: Mapping[str, Any]
) -> dict[str, str]:
    if stage == "Panic":
        return {"result": "failure", "reason": "the API server panicked handling the request"}
    if annotations.get("authorization.k8s.io/decision") == "forbid":
        reason = annotations.get("authorization.k8s.io/reason")
        out = {"result": "failure", "reason": "forbidden"}
        if isinstance(reason, str) and reason:
            out["reason"] = f"forbidden: {reason}"[:1024]
        return out
    if not isinstance(code, int):
        return {"result": "unknown"}
    if code < 400:
        return {"result": "success"}
    message = status.get("message") or status.get("reason")
    reason = f"HTTP {code}" + (f": {message}" if isinstance(message, str) and message else "")
    return {"result": "failure", "reason": reason[:1024]}

"""Audit events: the ``translog.event/v1`` schema, search indexes, retention and erasure.

``schema`` and ``builder`` are pure (no I/O). ``index`` maintains the secondary indexes in the
log's storage, ``retention`` erases payloads under retention policies, legal holds and erasure
requests, ``selection`` exports query results as evidence, and ``cli`` adds the commands.
See docs/EVENTS.md.
"""

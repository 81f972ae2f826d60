"""The independent monitor and auditor (``translog monitor``, ``translog audit``).

A monitor follows one or more logs that serve C2SP tlog-tiles and checkpoints (translog or any
other implementation), with its own state (:mod:`~translog.monitor.store`, SQLite) and never
the log's files. Modules:

* :mod:`~translog.monitor.config`: the ``monitor.toml`` format;
* :mod:`~translog.monitor.recompute`: rebuild the tree and its tiles from the entries (pure);
* :mod:`~translog.monitor.follower`: one log: poll, verify, prove consistency, recompute,
  detect; also the gossip hook (:meth:`Follower.check_foreign`) for witnesses. Its parts:
  :mod:`~translog.monitor.follower_base` (shared state, alerting),
  :mod:`~translog.monitor.consistency` (forks, rollbacks, split views),
  :mod:`~translog.monitor.rebuild` (recomputation over HTTP, tiles compared),
  :mod:`~translog.monitor.detections` (mismatch and content-rule alerts),
  :mod:`~translog.monitor.freshness` (staleness, availability, promises);
* :mod:`~translog.formats.rules`: content rules over JSON payloads (pure);
* :mod:`~translog.formats.evidence`: evidence files and their offline check (pure);
* :mod:`~translog.monitor.alerts`: alert lines and sinks (stdout, file, webhook);
* :mod:`~translog.monitor.monitor`: the long-running process over several logs;
* :mod:`~translog.monitor.audit`: the one-shot full recompute;
* :mod:`translog.cli.monitor`: the ``monitor`` and ``audit`` commands.
"""

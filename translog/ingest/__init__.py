"""Ingest sources that are not HTTP routes: listeners that run beside the HTTP server, in the
process that owns the log, and submit through :class:`translog.log.submission.Submissions`.

* :mod:`translog.ingest.syslog`: syslog over TLS (RFC 5425), ``[syslog]`` in the config.
"""

"""The HTTP face of translog: app factory, thin handlers, one error-to-status table."""

"""translog benchmarks: durable append, proofs from LMDB, bytes on disk.

Run them with ``python -m benchmarks.run`` (``make bench``); see benchmarks/RESULTS.md.
"""

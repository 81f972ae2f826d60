"""Pure, offline formats: receipts, tlog-proof files, bundles, log lists, evidence, events, verify.

No I/O: imports neither aiohttp nor lmdb.
"""

"""The pure tlog: Merkle math, tiles, signed notes, signing, checkpoints, leaves, policy.

No I/O: imports neither aiohttp nor lmdb.
"""

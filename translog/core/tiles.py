"""C2SP tlog-tiles coordinates: tile paths, widths, entry bundles and a tile-backed HashReader.

Pure: no I/O. A hash tile at tile level ``L`` holds the Merkle nodes at tree level ``8 * L``:
full tile ``N`` holds nodes ``N * 256 .. N * 256 + 255``, and a partial tile of width ``W``
holds the first ``W`` of them. Entry bundles (``tile/entries/N``) hold the entries whose leaf
hashes make up level-0 tile ``N``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from translog.core.merkle import HASH_SIZE, HashReader, node_hash
from translog.errors import MalformedError, NotFoundError, TooLargeError

TILE_WIDTH = 256
TILE_HEIGHT = 8

_MAX_LEVEL = 63
_MAX_INDEX = (1 << 63) - 1
_MAX_GROUPS = 7  # 2**63 - 1 has 19 decimal digits
_MAX_ENTRY = 0xFFFF
_U16 = struct.Struct(">H")


def format_index(n: int) -> str:
    """Encode a tile index as 3-digit groups, all but the last prefixed with ``x``.

    5 -> ``005``, 1000 -> ``x001/000``, 1234067 -> ``x001/x234/067``.
    """
    if not 0 <= n <= _MAX_INDEX:
        raise MalformedError(f"tile index out of range: {n}")
    path = f"{n % 1000:03d}"
    n //= 1000
    while n:
        path = f"x{n % 1000:03d}/{path}"
        n //= 1000
    return path


@dataclass(frozen=True)
class TileRef:
    """One hash tile (``tile/<level>/<index>``) or entry bundle (``tile/entries/<index>``).

    ``width`` is 256 for a full tile and 1..255 for a partial one. Entry bundles use level 0.
    """

    level: int
    index: int
    width: int
    entries: bool = False

    def __post_init__(self) -> None:
        """Reject coordinates no tile can have."""
        if not 0 <= self.level <= _MAX_LEVEL:
            raise MalformedError(f"tile level out of range: {self.level}")
        if self.entries and self.level != 0:
            raise MalformedError(f"entry bundle must have level 0, got {self.level}")
        if not 0 <= self.index <= _MAX_INDEX:
            raise MalformedError(f"tile index out of range: {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise MalformedError(f"tile width out of range: {self.width}")

    @property
    def path(self) -> str:
        """The resource path, e.g. ``tile/0/x001/234.p/17``, with no leading slash."""
        head = "tile/entries/" if self.entries else f"tile/{self.level}/"
        tail = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return head + format_index(self.index) + tail


def _parse_decimal(text: str, what: str, lo: int, hi: int) -> int:
    """Parse ASCII decimal with no sign and no leading zeros, within ``[lo, hi]``."""
    if not text or len(text) > len(str(hi)) or not text.isascii() or not text.isdigit():
        raise MalformedError(f"malformed tile {what}: {text!r}")
    if len(text) > 1 and text[0] == "0":
        raise MalformedError(f"tile {what} has leading zeros: {text!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise MalformedError(f"tile {what} out of range {lo}..{hi}: {value}")
    return value


def _parse_group(group: str, final: bool) -> int:
    """Parse one 3-digit group of a tile index (``x``-prefixed unless it is the last)."""
    digits = group if final else group[1:]
    if (not final and group[:1] != "x") or len(digits) != 3:
        raise MalformedError(f"malformed tile index group: {group!r}")
    if not digits.isascii() or not digits.isdigit():
        raise MalformedError(f"malformed tile index group: {group!r}")
    return int(digits)


def _parse_index(groups: list[str]) -> int:
    """Parse the ``N`` part of a tile path from its ``/``-separated groups, canonically."""
    if not 1 <= len(groups) <= _MAX_GROUPS:
        raise MalformedError(f"tile index has {len(groups)} groups, expected 1..{_MAX_GROUPS}")
    n = 0
    for i, group in enumerate(groups):
        n = n * 1000 + _parse_group(group, i == len(groups) - 1)
    if n > _MAX_INDEX:
        raise MalformedError(f"tile index out of range: {n}")
    if format_index(n) != "/".join(groups):
        raise MalformedError(f"tile index is not in canonical form: {'/'.join(groups)!r}")
    return n


def parse_tile_path(path: str) -> TileRef:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` strictly.

    ``L`` is decimal 0..63 without leading zeros, ``N`` is canonical 3-digit groups and ``W``
    is decimal 1..255 without leading zeros. Anything else raises MalformedError, so
    ``parse_tile_path(ref.path) == ref`` and ``parse_tile_path(p).path == p``.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise MalformedError(f"malformed tile path: {path!r}")
    entries = parts[1] == "entries"
    level = 0 if entries else _parse_decimal(parts[1], "level", 0, _MAX_LEVEL)
    groups = parts[2:]
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        width = _parse_decimal(groups[-1], "width", 1, TILE_WIDTH - 1)
        groups = [*groups[:-2], groups[-2][:-2]]
    return TileRef(level, _parse_index(groups), width, entries)


def partial_width(size: int, level: int) -> int:
    """Width of the partial tile at tile ``level`` for a tree of ``size`` (0: there is none)."""
    return (size >> (TILE_HEIGHT * level)) % TILE_WIDTH


def tiles_for_size(size: int, *, entries: bool = False) -> list[TileRef]:
    """Every tile of a tree of ``size`` leaves, full and partial, level by level.

    With ``entries=True``, return the entry bundles instead (they follow level 0).
    """
    if size < 0:
        raise MalformedError(f"invalid tree size: {size}")
    refs: list[TileRef] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        full = size >> (TILE_HEIGHT * (level + 1))
        refs += [TileRef(level, n, TILE_WIDTH, entries) for n in range(full)]
        width = partial_width(size, level)
        if width:
            refs.append(TileRef(level, full, width, entries))
        if entries:
            break
        level += 1
    return refs


def tile_nodes(ref: TileRef) -> list[tuple[int, int]]:
    """The Merkle nodes ``(level, index)`` that hash tile ``ref`` holds, in order."""
    if ref.entries:
        raise MalformedError(f"entry bundle {ref.path} holds no hashes")
    first = ref.index * TILE_WIDTH
    level = TILE_HEIGHT * ref.level
    return [(level, first + i) for i in range(ref.width)]


def read_tile(ref: TileRef, reader: HashReader) -> bytes:
    """Return the content of hash tile ``ref``: its hashes concatenated (``width * 32`` bytes)."""
    return b"".join(reader.read_hashes(tile_nodes(ref)))


def check_tile_available(ref: TileRef, size: int) -> None:
    """Raise NotFoundError unless the log can serve ``ref`` for a tree of ``size`` leaves.

    Rule: every node the tile holds must exist in the tree of ``size``, that is
    ``(index * 256 + width) * 256**level <= size``. A full tile is then complete. A partial
    tile of any width whose nodes exist is accepted: the log serves partial tiles for every
    size it has checkpointed, and a width below the current partial width was the partial
    width of some earlier size. Entry bundles follow the same rule at level 0.
    """
    end = (ref.index * TILE_WIDTH + ref.width) << (TILE_HEIGHT * ref.level)
    if end > size:
        raise NotFoundError(f"tile {ref.path} needs {end} leaves, tree size is {size}")


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Encode an entry bundle: each entry as a big-endian uint16 length, then its bytes."""
    if entries and max(map(len, entries)) > _MAX_ENTRY:
        i, entry = next((i, e) for i, e in enumerate(entries) if len(e) > _MAX_ENTRY)
        raise TooLargeError(
            f"bundle entry {i} is too large: {len(entry)} bytes, at most {_MAX_ENTRY}"
        )
    # One pass, no per-entry bytearray growth: this runs for every bundle served.
    prefix = _U16.pack
    return b"".join([prefix(len(entry)) + entry for entry in entries])


def decode_bundle(data: bytes) -> list[bytes]:
    """Decode an entry bundle strictly; a truncated length or entry raises MalformedError."""
    entries: list[bytes] = []
    pos = 0
    end = len(data)
    while pos < end:
        if pos + 2 > end:
            raise MalformedError(f"entry bundle truncated in the length of entry {len(entries)}")
        size = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if pos + size > end:
            raise MalformedError(
                f"entry bundle truncated in entry {len(entries)}: "
                f"expected {size} bytes, got {end - pos}"
            )
        entries.append(bytes(data[pos : pos + size]))
        pos += size
    return entries


class TileHashReader:
    """A :class:`~translog.core.merkle.HashReader` over hash tiles, for clients that prove locally.

    ``fetch_tile(ref)`` returns a tile's bytes (from HTTP, a cache or a file). Nodes at levels
    that are multiples of 8 are read straight from a tile; others are computed from the tile
    below. The widest tile that exists for ``size`` is fetched (full if complete, else the
    partial tile of that size), and each tile is fetched once per reader.
    """

    def __init__(self, size: int, fetch_tile: Callable[[TileRef], bytes]) -> None:
        """Create a reader for the tree of ``size`` leaves."""
        if size < 0:
            raise MalformedError(f"invalid tree size: {size}")
        self._size = size
        self._fetch = fetch_tile
        self._tiles: dict[tuple[int, int], bytes] = {}
        self._computed: dict[tuple[int, int], bytes] = {}

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return the hash of each complete node; NotFoundError if it is not in the tree."""
        return [self._read_node(level, index) for level, index in nodes]

    def _read_node(self, level: int, index: int) -> bytes:
        """Read or compute one complete node from its tile."""
        if level < 0 or index < 0 or (index + 1) << level > self._size:
            raise NotFoundError(
                f"no node at level {level}, index {index} in a tree of size {self._size}"
            )
        tile_level, height = divmod(level, TILE_HEIGHT)
        # The node is the root of 2**height consecutive hashes at level 8 * tile_level;
        # they are aligned, so they all lie in one tile.
        first = index << height
        tile = self._tile(tile_level, first // TILE_WIDTH)
        start = (first % TILE_WIDTH) * HASH_SIZE
        if height == 0:
            return tile[start : start + HASH_SIZE]
        cached = self._computed.get((level, index))
        if cached is None:
            cached = _perfect_root(tile[start : start + (HASH_SIZE << height)])
            self._computed[(level, index)] = cached
        return cached

    def _tile(self, tile_level: int, tile_index: int) -> bytes:
        """Fetch (once) the widest tile ``(tile_level, tile_index)`` available for the size."""
        key = (tile_level, tile_index)
        cached = self._tiles.get(key)
        if cached is not None:
            return cached
        shift = TILE_HEIGHT * tile_level
        if (tile_index + 1) * TILE_WIDTH << shift <= self._size:
            width = TILE_WIDTH
        else:
            width = partial_width(self._size, tile_level)
        ref = TileRef(tile_level, tile_index, width)
        data = self._fetch(ref)
        if len(data) != width * HASH_SIZE:
            raise MalformedError(
                f"tile {ref.path} has wrong length: expected {width * HASH_SIZE}, got {len(data)}"
            )
        self._tiles[key] = data
        return data


def _perfect_root(hashes: bytes) -> bytes:
    """Root of a perfect subtree given its 2**k bottom hashes concatenated."""
    level = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]

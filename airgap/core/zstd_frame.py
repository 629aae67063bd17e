"""The structure of one zstd frame (RFC 8878), walked as its bytes stream past.

A member stored as ``.zst`` must be exactly one standard zstd frame: a frame header that declares
the content size, no dictionary, blocks up to the one marked last, the checksum when the header
says there is one — and not one byte more. The decompressor alone does not prove this: it reads
across frames and ignores what a frame leaves over, so junk after a valid frame, a second frame or
a frame cut short would pass it. The walker does not decompress; it reads the 3-byte block headers
and skips the block bodies by arithmetic, so it costs almost nothing at hashing speed.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"\x28\xb5\x2f\xfd"
MAX_BLOCK = 128 << 10


class FrameError(ValueError):
    """The bytes are not exactly one well-formed zstd frame."""


@dataclass
class FrameWalker:
    """Feed the stored bytes with ``update``; ``finish`` raises unless they were exactly one frame."""

    content_size: int | None = None  # declared in the frame header
    _buf: bytes = b""
    _state: str = "header"  # header, block, body, checksum, done
    _skip: int = 0
    _checksum: bool = False
    _last: bool = False

    def update(self, data: bytes | memoryview) -> None:
        """Walks the next stored bytes in any chunking, raising ``FrameError`` as soon as they cannot be part
        of one well-formed frame (a dictionary, a reserved bit or block type, an oversized block, or any
        byte after the frame's end), so a bad member is rejected before it is decompressed."""
        view = memoryview(data)
        while view:
            if self._state == "done":
                raise FrameError(f"{len(view)} bytes follow the end of the zstd frame")
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                if not self._skip:
                    self._after_skip()
                continue
            need = self._need()
            take = min(need - len(self._buf), len(view))
            self._buf += bytes(view[:take])
            view = view[take:]
            if len(self._buf) == need:
                self._consume()

    def _need(self) -> int:
        if self._state == "header":
            if len(self._buf) < 5:
                return 5
            return 5 + _header_rest(self._buf[4])
        return 3  # a block header

    def _consume(self) -> None:
        buf, self._buf = self._buf, b""
        if self._state == "header":
            if len(buf) == 5 and _header_rest(buf[4]) > 0:
                self._buf = buf  # read the rest of the header first
                if buf[:4] != MAGIC:
                    raise FrameError("the member does not start with a zstd frame")
                return
            self._parse_header(buf)
            self._state = "block"
            return
        value = int.from_bytes(buf, "little")
        self._last = bool(value & 1)
        kind = (value >> 1) & 3
        size = value >> 3
        if kind == 3:
            raise FrameError("a zstd block has the reserved type")
        if size > MAX_BLOCK:
            raise FrameError(f"a zstd block claims {size} bytes, over the {MAX_BLOCK} allowed")
        self._skip = 1 if kind == 1 else size
        if not self._skip:
            self._after_skip()

    def _after_skip(self) -> None:
        if self._state == "block" and self._last:
            if self._checksum:
                self._state = "checksum"
                self._skip = 4
                return
            self._state = "done"
        elif self._state == "checksum":
            self._state = "done"

    def _parse_header(self, buf: bytes) -> None:
        if buf[:4] != MAGIC:
            raise FrameError("the member does not start with a zstd frame")
        fhd = buf[4]
        if fhd & 0x08:
            raise FrameError("the zstd frame header sets a reserved bit")
        if fhd & 0x03:
            raise FrameError("the zstd frame needs a dictionary")
        fcs_flag, single = fhd >> 6, bool(fhd & 0x20)
        self._checksum = bool(fhd & 0x04)
        fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
        if fcs_size == 0:
            raise FrameError("the zstd frame does not declare its content size")
        raw = buf[len(buf) - fcs_size :]
        size = int.from_bytes(raw, "little")
        self.content_size = size + 256 if fcs_size == 2 else size

    def finish(self) -> int:
        """The declared content size, once the bytes fed were exactly one complete frame."""
        if self._state != "done" or self._skip or self._buf:
            raise FrameError("the zstd frame is cut short")
        assert self.content_size is not None
        return self.content_size


def _header_rest(fhd: int) -> int:
    """Bytes of the frame header after the descriptor byte: window, dictionary id, content size."""
    fcs_flag, single, did = fhd >> 6, bool(fhd & 0x20), fhd & 0x03
    return (0 if single else 1) + (0, 1, 2, 4)[did] + (1 if single else 0, 2, 4, 8)[fcs_flag]

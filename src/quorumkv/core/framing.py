"""Sans-IO framing (the h11 shape): feed bytes, take decoded messages out.

A frame is ``len:u32be`` + msgpack payload. ``FrameDecoder.feed()`` buffers and
returns every complete message; it raises ``ProtocolError`` on an oversized frame
or a payload that is not a known message. The caller answers with an error where it
can and closes the connection; nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import ProtocolError
from .limits import FRAME_BYTES_MAX
from .wire import Message

_HEADER = 4


class FrameDecoder:
    __slots__ = ("_buf", "_decoder", "frame_bytes_max", "_consumed")

    def __init__(self, message_type: Any = Message, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buf = bytearray()
        self._decoder = msgspec.msgpack.Decoder(message_type)
        self.frame_bytes_max = frame_bytes_max

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out: list[Any] = []
        size = len(buf)
        decode = self._decoder.decode
        self._consumed = 0
        view = memoryview(buf)
        try:
            out = self._frames(view, size, decode, out)
        finally:
            view.release()
            if self._consumed:
                del buf[: self._consumed]
        return out

    def _frames(self, view: memoryview, size: int, decode: Callable[[memoryview], Any],
                out: list[Any]) -> list[Any]:
        buf = self._buf
        pos = 0
        while size - pos >= _HEADER:
            length = int.from_bytes(buf[pos : pos + _HEADER], "big")
            if length > self.frame_bytes_max:
                raise ProtocolError(
                    f"frame of {length} bytes exceeds FRAME_BYTES_MAX={self.frame_bytes_max}"
                )
            end = pos + _HEADER + length
            if end > size:
                break
            try:
                out.append(decode(view[pos + _HEADER : end]))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProtocolError(f"undecodable frame: {exc}") from None
            pos = end
        self._consumed = pos
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


class FrameEncoder:
    __slots__ = ("_encode",)

    def __init__(self) -> None:
        self._encode = msgspec.msgpack.Encoder().encode

    def encode(self, msg: object) -> bytes:
        payload = self._encode(msg)
        return len(payload).to_bytes(_HEADER, "big") + payload

"""RESP (the Redis protocol), sans-IO: a request parser and reply encoders.

No sockets, no asyncio, no clock (h11's shape): ``RequestParser.receive_data(bytes)``
buffers, ``next_command()`` returns one command (a list of ``bytes``: the name and
its arguments) or ``NEED_DATA``; the ``encode_*`` functions turn replies into bytes.

Requests are what redis-server accepts (``networking.c``):

* multibulk: ``*<n>\\r\\n`` then n bulk strings ``$<len>\\r\\n<bytes>\\r\\n`` — what
  every client library, redis-cli and redis-benchmark send;
* inline: one line of space-separated words, with ``"..."`` / ``'...'`` quoting as in
  ``sdssplitargs`` — what a human types into telnet/nc.

RESP3 changes replies, not requests, so one parser serves both versions. Replies
differ only where RESP3 has a type of its own: null (``$-1`` vs ``_``) and map (a
flat array in RESP2 vs ``%``).

Anything that is not RESP raises ``RespProtocolError`` (the remote's fault); the
parser is then unusable and the connection must be closed after an error reply —
as redis-server does, since the byte stream can no longer be framed.
"""

from __future__ import annotations

from ..core.limits import VALUE_BYTES_MAX
from ..errors import ProtocolError

#: Largest bulk string (one argument) accepted. A value is at most VALUE_BYTES_MAX
#: and a key far less, so a larger bulk would be refused anyway; refusing it at the
#: length header means we never buffer it. (redis-server: proto-max-bulk-len, 512 MB.)
BULK_BYTES_MAX = VALUE_BYTES_MAX

#: Most arguments in one multibulk request. redis-server allows 1M (a C array costs
#: 8 bytes a slot); a Python ``bytes`` costs ~40, and an MSET/MGET/DEL of more than
#: 32k keys is better sent as several commands anyway.
ARRAY_LEN_MAX = 65_536

#: Longest inline command, and longest ``*<n>`` / ``$<len>`` header line: the same
#: 64 KiB as redis-server's PROTO_INLINE_MAX_SIZE. Without it a peer that never sends
#: a newline would make us buffer forever.
INLINE_BYTES_MAX = 64 * 1024

#: Most bytes of one multibulk command (all its arguments), since a command is
#: executed only once it is complete and so is held in memory whole: two full values
#: (an MSET of two 8 MiB values) plus keys and headers.
COMMAND_BYTES_MAX = 2 * VALUE_BYTES_MAX + INLINE_BYTES_MAX

_INT_DIGITS_MAX = 20  # "-9223372036854775808"


class RespProtocolError(ProtocolError):
    """The peer sent bytes that are not a RESP request. The message is Redis's own
    wording ("Protocol error: ...") so clients show familiar text."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class RequestParser:
    """Incremental RESP request parser. Feed any chunking, get whole commands."""

    __slots__ = ("_buf", "_pos", "_args", "_argc", "_bulk_len", "_cmd_bytes", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already consumed
        self._args: list[bytes] | None = None  # multibulk being assembled
        self._argc = 0  # arguments still expected
        self._bulk_len = -1  # length of the bulk whose payload we wait for, -1: header next
        self._cmd_bytes = 0
        self._error: RespProtocolError | None = None

    # -- input ------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]  # compact: keep the buffer proportional to unread data
            self._pos = 0
        self._buf += data

    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[list[bytes]]:
        """``receive_data`` then every complete command. On a protocol error the
        commands completed before it are on the exception as ``.commands``."""
        self.receive_data(data)
        return self.commands()

    # -- parsing ----------------------------------------------------------------
    def commands(self, limit: int = 0) -> list[list[bytes]]:
        """Every complete command in the buffer (``next_command`` until NEED_DATA), or
        at most ``limit`` of them when ``limit`` > 0 (the rest stay buffered).

        The common case — whole multibulk commands of small, well-formed bulks — is
        parsed by one tight loop; anything else (a partial command, an inline command,
        a header that breaks a bound or is not plain digits) is left to the careful
        path, ``next_command``, which gives the exact error. On a protocol error the
        commands completed before it are on the exception as ``.commands``."""
        out: list[list[bytes]] = []
        limit = limit if limit > 0 else -1
        if self._error is None and self._args is None:
            self._fast(out, limit)
        try:
            while len(out) != limit:
                cmd = self.next_command()
                if cmd is NEED_DATA:
                    return out
                out.append(cmd)
                if self._args is None:
                    self._fast(out, limit)
            return out
        except RespProtocolError as exc:
            exc.commands = out
            raise

    def _fast(self, out: list, limit: int = -1) -> None:
        buf = self._buf
        size = len(buf)
        pos = self._pos
        find = buf.find
        while pos < size and buf[pos] == 0x2A and len(out) != limit:  # '*'
            end = find(b"\r\n", pos, pos + 24)
            head = buf[pos + 1:end]
            if end < 0 or not head.isdigit():
                break
            count = int(head)
            if not 0 < count <= ARRAY_LEN_MAX:
                break
            p = end + 2
            args = []
            total = p - pos
            for _ in range(count):
                if p >= size or buf[p] != 0x24:  # '$'
                    break
                end = find(b"\r\n", p, p + 24)
                head = buf[p + 1:end]
                if end < 0 or not head.isdigit():
                    break
                n = int(head)
                start = end + 2
                stop = start + n
                total += stop + 2 - p
                if n > BULK_BYTES_MAX or total > COMMAND_BYTES_MAX or stop + 2 > size or \
                        buf[stop] != 0x0D or buf[stop + 1] != 0x0A:
                    break
                args.append(bytes(buf[start:stop]))
                p = stop + 2
            else:
                out.append(args)
                pos = self._pos = p
                continue
            break  # not plainly complete and well-formed: the careful path decides

    def next_command(self):
        """The next complete command (a non-empty list of bytes) or ``NEED_DATA``."""
        if self._error is not None:
            raise self._error
        try:
            while True:
                if self._args is None:
                    if self._pos >= len(self._buf):
                        return NEED_DATA
                    if self._buf[self._pos] == 0x2A:  # '*'
                        r = self._start_multibulk()
                    else:
                        r = self._inline()
                    if r is NEED_DATA:
                        return NEED_DATA
                    if r is None:
                        continue  # empty line / empty multibulk: ignored, like redis-server
                    if type(r) is list:
                        return r
                    # else: multibulk started
                r = self._multibulk_args()
                if r is not None:
                    return r
                return NEED_DATA
        except RespProtocolError as exc:
            self._error = exc
            raise

    def _line(self, start: int) -> int:
        """Index of the '\\r' ending the line that starts at ``start``, or -1."""
        end = self._buf.find(b"\r\n", start, start + INLINE_BYTES_MAX + 2)
        if end < 0 and len(self._buf) - start > INLINE_BYTES_MAX:
            raise RespProtocolError("Protocol error: too big mbulk count string"
                                    if self._buf[start] == 0x2A else "Protocol error: too big bulk count string")
        return end

    def _int(self, start: int, end: int, what: str) -> int:
        raw = bytes(self._buf[start:end])
        if not raw or len(raw) > _INT_DIGITS_MAX or not (raw.isdigit() or (raw[:1] == b"-" and raw[1:].isdigit())):
            raise RespProtocolError(f"Protocol error: invalid {what} length")
        return int(raw)

    def _start_multibulk(self):
        pos = self._pos
        end = self._line(pos)
        if end < 0:
            return NEED_DATA
        count = self._int(pos + 1, end, "multibulk")
        if count > ARRAY_LEN_MAX:
            raise RespProtocolError(f"Protocol error: invalid multibulk length {count} (ARRAY_LEN_MAX={ARRAY_LEN_MAX})")
        self._pos = end + 2
        if count <= 0:
            return None
        self._args = []
        self._argc = count
        self._bulk_len = -1
        self._cmd_bytes = end + 2 - pos
        return True

    def _multibulk_args(self):
        buf = self._buf
        args = self._args
        while self._argc:
            pos = self._pos
            if self._bulk_len < 0:
                if pos >= len(buf):
                    return None
                if buf[pos] != 0x24:  # '$'
                    ch = chr(buf[pos]) if 32 <= buf[pos] < 127 else f"\\x{buf[pos]:02x}"
                    raise RespProtocolError(f"Protocol error: expected '$', got '{ch}'")
                end = self._line(pos)
                if end < 0:
                    return None
                n = self._int(pos + 1, end, "bulk")
                if n < 0 or n > BULK_BYTES_MAX:
                    raise RespProtocolError(f"Protocol error: invalid bulk length {n} (BULK_BYTES_MAX={BULK_BYTES_MAX})")
                self._cmd_bytes += end + 2 - pos + n + 2
                if self._cmd_bytes > COMMAND_BYTES_MAX:
                    raise RespProtocolError(f"Protocol error: command larger than COMMAND_BYTES_MAX={COMMAND_BYTES_MAX}")
                self._bulk_len = n
                self._pos = pos = end + 2
            n = self._bulk_len
            if len(buf) - pos < n + 2:
                return None
            if buf[pos + n] != 0x0D or buf[pos + n + 1] != 0x0A:
                raise RespProtocolError("Protocol error: bulk string not terminated by CRLF")
            args.append(bytes(buf[pos:pos + n]))
            self._pos = pos + n + 2
            self._bulk_len = -1
            self._argc -= 1
        self._args = None
        return args

    def _inline(self):
        buf = self._buf
        pos = self._pos
        nl = buf.find(b"\n", pos, pos + INLINE_BYTES_MAX + 1)
        if nl < 0:
            if len(buf) - pos > INLINE_BYTES_MAX:
                raise RespProtocolError("Protocol error: too big inline request")
            return NEED_DATA
        end = nl - 1 if nl > pos and buf[nl - 1] == 0x0D else nl
        line = bytes(buf[pos:end])
        self._pos = nl + 1
        args = split_inline(line)
        return args or None


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command like redis-server's ``sdssplitargs``: whitespace
    separates words; ``"..."`` understands \\n \\r \\t \\b \\a \\\\ \\" and \\xHH; ``'...'``
    only \\'. A closing quote must be followed by whitespace or the end."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        inq = insq = False
        while True:
            if inq:
                if i >= n:
                    raise RespProtocolError("Protocol error: unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and _ishex(line[i + 2]) and _ishex(line[i + 3]):
                    cur.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    cur.append({0x6E: 10, 0x72: 13, 0x74: 9, 0x62: 8, 0x61: 7}.get(line[i], line[i]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise RespProtocolError("Protocol error: unbalanced quotes in request")
                    inq = False
                    i += 1
                    break
                else:
                    cur.append(c)
            elif insq:
                if i >= n:
                    raise RespProtocolError("Protocol error: unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    cur.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise RespProtocolError("Protocol error: unbalanced quotes in request")
                    insq = False
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \t\r\n\v\f":
                    break
                if c == 0x22:
                    inq = True
                elif c == 0x27:
                    insq = True
                else:
                    cur.append(c)
            i += 1
        args.append(bytes(cur))


def _ishex(c: int) -> bool:
    return c in b"0123456789abcdefABCDEF"


# --------------------------------------------------------------------- replies
# Simple strings and errors are one line: CR/LF inside would break framing, so they
# become spaces (redis-server does the same when it builds error replies).
_LINE_TABLE = bytes.maketrans(b"\r\n", b"  ")

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL_RESP2 = b"$-1\r\n"
NULL_ARRAY_RESP2 = b"*-1\r\n"
NULL_RESP3 = b"_\r\n"
EMPTY_ARRAY = b"*0\r\n"


def _line_bytes(text: str | bytes) -> bytes:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    return data.translate(_LINE_TABLE)


def encode_simple(text: str | bytes) -> bytes:
    return b"+" + _line_bytes(text) + b"\r\n"


def encode_error(message: str) -> bytes:
    """``message`` starts with the error code: "ERR ...", "NOQUORUM ...", "WRONGPASS ..."."""
    return b"-" + _line_bytes(message) + b"\r\n"


def encode_int(value: int) -> bytes:
    return b":%d\r\n" % value


def encode_bulk(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_null(proto: int) -> bytes:
    return NULL_RESP3 if proto == 3 else NULL_RESP2


def encode_bulk_or_null(data: bytes | None, proto: int) -> bytes:
    return encode_null(proto) if data is None else encode_bulk(data)


def encode_array(encoded_items: list[bytes]) -> bytes:
    """An array of already-encoded replies."""
    return b"*%d\r\n" % len(encoded_items) + b"".join(encoded_items)


def encode_map(pairs: list[tuple[bytes, bytes]], proto: int) -> bytes:
    """A map of already-encoded keys and values: ``%n`` in RESP3, a flat array of
    2n items in RESP2 (which is how redis-server answers HELLO 2)."""
    head = b"%%%d\r\n" % len(pairs) if proto == 3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def encode_set(encoded_items: list[bytes], proto: int) -> bytes:
    head = b"~%d\r\n" if proto == 3 else b"*%d\r\n"
    return head % len(encoded_items) + b"".join(encoded_items)


def encode_value(value, proto: int) -> bytes:
    """Python data to RESP: str/bytes → bulk, int → integer, None → null, list/tuple →
    array, dict → map. For the informational replies (HELLO, COMMAND, QUORUM)."""
    if value is None:
        return encode_null(proto)
    if isinstance(value, bool):
        return encode_int(int(value))
    if isinstance(value, int):
        return encode_int(value)
    if isinstance(value, (bytes, str)):
        return encode_bulk(value)
    if isinstance(value, dict):
        return encode_map([(encode_value(k, proto), encode_value(v, proto)) for k, v in value.items()], proto)
    if isinstance(value, (list, tuple)):
        return encode_array([encode_value(v, proto) for v in value])
    raise TypeError(f"cannot encode {type(value).__name__} as RESP")

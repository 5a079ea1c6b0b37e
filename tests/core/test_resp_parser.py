"""The sans-IO RESP parser and reply encoders: framing, chunking, bounds, garbage."""

from __future__ import annotations

import pytest

from quorumkv.resp import parser as p
from quorumkv.resp.parser import NEED_DATA, RequestParser, RespProtocolError

STREAM = (
    b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n"  # CRLF inside a bulk is data
    b"PING\r\n"
    b"\r\n"  # an empty inline line is ignored, as by redis-server
    b"*0\r\n"  # so is an empty multibulk
    b"set \"a b\" 'c\\'d' \"\\x41\\n\"\n"  # inline, LF only, quoting
    b"*1\r\n$0\r\n\r\n"  # an empty argument
)
EXPECTED = [[b"SET", b"key", b"va\r\nl"], [b"PING"], [b"set", b"a b", b"c'd", b"A\n"], [b""]]


def test_whole_stream():
    assert RequestParser().feed(STREAM) == EXPECTED


def test_byte_at_a_time_gives_the_same_commands():
    parser = RequestParser()
    got = []
    for i in range(len(STREAM)):
        got += parser.feed(STREAM[i:i + 1])
    assert got == EXPECTED
    assert parser.buffered_bytes() == 0


@pytest.mark.parametrize("size", [2, 3, 7, 13])
def test_any_chunking(size):
    parser = RequestParser()
    got = []
    for i in range(0, len(STREAM), size):
        got += parser.feed(STREAM[i:i + size])
    assert got == EXPECTED


def test_next_command_reports_need_data_until_complete():
    parser = RequestParser()
    parser.receive_data(b"*2\r\n$3\r\nGET\r\n$1\r\n")
    assert parser.next_command() is NEED_DATA
    parser.receive_data(b"k\r")
    assert parser.next_command() is NEED_DATA
    parser.receive_data(b"\n")
    assert parser.next_command() == [b"GET", b"k"]
    assert parser.next_command() is NEED_DATA


def test_binary_safe_bulk():
    value = bytes(range(256)) * 3
    cmd = b"*2\r\n$3\r\nSET\r\n$%d\r\n%b\r\n" % (len(value), value)
    assert RequestParser().feed(cmd) == [[b"SET", value]]


@pytest.mark.parametrize("data, message", [
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*-\r\n", "invalid multibulk length"),
    (b"*2\r\n:1\r\n", "expected '$', got ':'"),
    (b"*1\r\n$x\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$3\r\nabcde\r\n", "not terminated by CRLF"),
    (b"set \"abc\n", "unbalanced quotes"),
    (b"set \"a\"b\n", "unbalanced quotes"),
    (b"*%d\r\n" % (p.ARRAY_LEN_MAX + 1), "ARRAY_LEN_MAX"),
    (b"*1\r\n$%d\r\n" % (p.BULK_BYTES_MAX + 1), "BULK_BYTES_MAX"),
])
def test_protocol_errors_are_typed_and_final(data, message):
    parser = RequestParser()
    with pytest.raises(RespProtocolError, match="Protocol error") as info:
        parser.feed(data)
    assert message in str(info.value)
    with pytest.raises(RespProtocolError):  # the stream cannot be re-framed: stays broken
        parser.feed(b"PING\r\n")


def test_commands_before_the_error_are_kept():
    with pytest.raises(RespProtocolError) as info:
        RequestParser().feed(b"PING\r\n*1\r\n$4\r\nECHO\r\n*x\r\n")
    assert info.value.commands == [[b"PING"], [b"ECHO"]]


def test_inline_line_bound():
    parser = RequestParser()
    parser.feed(b"a" * p.INLINE_BYTES_MAX)  # at the bound: still waiting for the newline
    with pytest.raises(RespProtocolError, match="too big inline request"):
        parser.feed(b"a")


def test_header_line_bound():
    parser = RequestParser()
    with pytest.raises(RespProtocolError, match="too big"):
        parser.feed(b"*" + b"1" * (p.INLINE_BYTES_MAX + 10))


def test_command_bytes_bound():
    parser = RequestParser()
    big = p.BULK_BYTES_MAX
    head = b"*4\r\n$4\r\nMSET\r\n"
    with pytest.raises(RespProtocolError, match="COMMAND_BYTES_MAX"):
        parser.feed(head + b"$%d\r\n" % big + b"x" * big + b"\r\n" + b"$%d\r\n" % big + b"y" * big + b"\r\n"
                    + b"$%d\r\n" % big)


def test_buffer_is_compacted_under_long_pipelines():
    parser = RequestParser()
    one = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    for _ in range(20_000):
        assert parser.feed(one + one[:5]) == [[b"GET", b"k"]]
        assert parser.feed(one[5:]) == [[b"GET", b"k"]]
    assert parser.buffered_bytes() == 0 and len(parser._buf) < 1_000_000


def test_garbage_never_raises_anything_but_protocol_errors():
    import random

    rng = random.Random(6)
    for _ in range(2_000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        parser = RequestParser()
        try:
            for cmd in parser.feed(blob):
                assert cmd and all(type(a) is bytes for a in cmd)
        except RespProtocolError:
            pass


# ----------------------------------------------------------------- encoders
def test_encoders_resp2_and_resp3():
    assert p.encode_simple("OK") == b"+OK\r\n"
    assert p.encode_error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"  # never breaks framing
    assert p.encode_int(-2) == b":-2\r\n"
    assert p.encode_bulk(b"a\r\nb") == b"$4\r\na\r\nb\r\n"
    assert p.encode_bulk("é") == b"$2\r\n\xc3\xa9\r\n"
    assert p.encode_null(2) == b"$-1\r\n" and p.encode_null(3) == b"_\r\n"
    assert p.encode_array([p.encode_int(1), p.encode_null(2)]) == b"*2\r\n:1\r\n$-1\r\n"
    pairs = [(p.encode_bulk("proto"), p.encode_int(3))]
    assert p.encode_map(pairs, 3) == b"%1\r\n$5\r\nproto\r\n:3\r\n"
    assert p.encode_map(pairs, 2) == b"*2\r\n$5\r\nproto\r\n:3\r\n"
    assert p.encode_value({"a": [1, None, "x"]}, 3) == b"%1\r\n$1\r\na\r\n*3\r\n:1\r\n_\r\n$1\r\nx\r\n"


def test_parser_imports_no_io():
    import subprocess
    import sys

    code = ("import sys, quorumkv.resp.parser, quorumkv.resp.commands; "
            "bad = {'asyncio', 'socket', 'selectors'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- fast path
def _careful(data: bytes, chunk: int):
    """Every command via next_command only (the careful path), or the error text."""
    parser = RequestParser()
    out = []
    try:
        for i in range(0, len(data), chunk):
            parser.receive_data(data[i:i + chunk])
            while (cmd := parser.next_command()) is not NEED_DATA:
                out.append(cmd)
    except RespProtocolError as exc:
        return out, str(exc)
    return out, None


def _batched(data: bytes, chunk: int):
    parser = RequestParser()
    out = []
    try:
        for i in range(0, len(data), chunk):
            parser.receive_data(data[i:i + chunk])
            out.extend(parser.commands())
    except RespProtocolError as exc:
        return out + exc.commands, str(exc)
    return out, None


_PIECES = [
    b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", b"PING\r\n",
    b"*0\r\n", b"*-1\r\n", b"\r\n", b"*1\r\n$4\r\nPING\r\n", b"*2\r\n$+3\r\nGET\r\n$1\r\nk\r\n",
    b"*1\r\n$ 4\r\nPING\r\n", b"* 1\r\n$4\r\nPING\r\n", b"*1\r\n$4\r\nPINGxx", b"*1\r\n:4\r\n",
    b"*2\r\n$3\r\nGET\r\n$-1\r\n", b"*1\r\n$99999999999\r\n", b"*9999999\r\n", b"*1_0\r\n",
    b"*2\r\n$3\r\nGET\r\n$2\r\n\r\n\r\n", b"*1\r\n$3\r\nGET\n",
]


@pytest.mark.parametrize("seed", range(40))
def test_batched_commands_equal_the_careful_path(seed):
    import random

    rng = random.Random(seed)
    data = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 12)))
    for chunk in (1, 3, 7, len(data) or 1):
        assert _batched(data, chunk) == _careful(data, chunk), (data, chunk)

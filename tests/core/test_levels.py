"""One parser for consistency levels (issue 9, item 3): the Python client, the CLI (which
hands its ``--r``/``--w`` text to the client), the RESP ``QUORUM`` command and
``QuorumRedis`` all read a level with the core's ``level_to_wire`` and check it against
N with the core's ``resolve`` — so the same text means the same level everywhere and is
refused with the same words."""

from __future__ import annotations

import types

import pytest

from quorumkv.client.base import DEFAULT, _Base
from quorumkv.core import messages as m
from quorumkv.core.consistency import resolve
from quorumkv.core.validation import level_to_wire
from quorumkv.errors import InvalidRequestError
from quorumkv.resp.commands import _level_arg
from quorumkv.resp.common import CommandError

NODE = types.SimpleNamespace(n=3)

ACCEPTED = [("1", 1), ("3", 3), ("one", m.LEVEL_ONE), (" Quorum ", m.LEVEL_QUORUM), ("ALL", m.LEVEL_ALL)]
REFUSED = [
    ("0", "consistency level must be >= 1, got 0"),  # was "the default" as text, 0 refused as int
    ("-1", "'-1' is not a consistency level (integer, ONE, QUORUM or ALL)"),
    ("MOST", "'MOST' is not a consistency level (integer, ONE, QUORUM or ALL)"),
]


def _client_wire(level) -> int:
    return _Base(["127.0.0.1:1"])._get_msg("k", level).r


@pytest.mark.parametrize("text,wire", ACCEPTED)
def test_every_side_reads_a_level_alike(text, wire):
    assert level_to_wire(text) == wire
    assert _client_wire(text) == wire  # the CLI passes its --r text here unchanged
    assert _level_arg(text.encode(), "R", NODE)[1] == wire


@pytest.mark.parametrize("text,message", REFUSED)
def test_every_side_refuses_a_bad_level_with_the_same_words(text, message):
    with pytest.raises(InvalidRequestError) as client_err:
        _client_wire(text)
    assert str(client_err.value) == message
    with pytest.raises(CommandError) as resp_err:
        _level_arg(text.encode(), "R", NODE)
    assert str(resp_err.value) == f"ERR {message}"


def test_digits_as_text_equal_the_integer():
    for level in (1, 2, 3):
        assert level_to_wire(str(level)) == level_to_wire(level)
        assert resolve(str(level), 3, 1, "R") == resolve(level, 3, 1, "R")
    with pytest.raises(InvalidRequestError):
        level_to_wire(0)


def test_a_level_beyond_n_is_refused_against_n_where_n_is_known():
    with pytest.raises(CommandError, match="R=4 is impossible with N=3: need 1 <= R <= 3"):
        _level_arg(b"4", "R", NODE)
    assert _client_wire("4") == 4  # the client does not know N: the coordinator refuses it
    assert _level_arg(b"DEFAULT", "R", NODE) == (None, m.LEVEL_DEFAULT)
    assert _client_wire(DEFAULT) == m.LEVEL_DEFAULT

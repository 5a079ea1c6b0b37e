"""One reply-status vocabulary (core/status.py) and one status -> error table, used by
the Python client and by the RESP front end alike."""

from __future__ import annotations

import msgspec
import pytest

from quorumkv import errors
from quorumkv.client.base import _check_atomic, _check_reply
from quorumkv.core import messages as m
from quorumkv.core import messages_cas as mc
from quorumkv.core import wire
from quorumkv.core.status import STATUS_ERRORS, SUCCESS, Status, raise_for_status, redis_error_line
from quorumkv.resp import atomic
from quorumkv.resp.commands import CommandError, _check


def test_every_status_is_a_success_or_has_an_error():
    for status in Status:
        assert (status in SUCCESS) != (status in STATUS_ERRORS), status
    assert SUCCESS == {Status.OK, Status.NOT_FOUND}


def test_messages_names_are_the_enum():
    for status in Status:
        assert getattr(m, status.name) is status


@pytest.mark.parametrize("status", list(Status))
def test_status_is_an_int_on_the_wire(status):
    as_enum = msgspec.msgpack.encode(m.Reply(7, status, message="x"))
    as_int = msgspec.msgpack.encode(m.Reply(7, int(status), message="x"))
    assert as_enum == as_int
    back = msgspec.msgpack.decode(as_enum, type=wire.Message)
    assert back.status == status and type(back.status) is int


@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
def test_client_raises_the_tables_exception(status):
    expected = STATUS_ERRORS[status].error
    for check, reply in ((_check_reply, m.Reply(1, status, message="why")),
                         (_check_atomic, mc.AtomicReply(1, status, message="why"))):
        with pytest.raises(expected) as info:
            check(reply)
        assert type(info.value) is expected and str(info.value) == "why"


@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
def test_resp_answers_the_tables_prefix(status):
    prefix = STATUS_ERRORS[status].redis_prefix
    for check, reply in ((_check, m.Reply(1, status, message="why")),
                         (atomic.check, mc.AtomicReply(1, status, message="why"))):
        with pytest.raises(CommandError) as info:
            check(reply)
        assert info.value.message == f"{prefix} why"


@pytest.mark.parametrize("status", sorted(SUCCESS))
def test_successes_pass_through(status):
    reply = m.Reply(1, status)
    assert _check_reply(reply) is reply and _check(reply) is reply
    assert redis_error_line(status, "") is None
    raise_for_status(status, "")


def test_a_status_this_version_does_not_know_is_an_internal_error():
    unknown = max(Status) + 1
    with pytest.raises(errors.QuorumKVError, match=f"node error \\(status {unknown}\\)"):
        _check_reply(m.Reply(1, unknown))
    assert redis_error_line(unknown, "boom") == "ERR internal error: boom"


def test_the_table_matches_the_documented_redis_codes():
    # docs/resp.md documents these error codes to Redis clients: changing one is a
    # user-visible change, so it must be a deliberate edit here too.
    assert {s.name: e.redis_prefix for s, e in STATUS_ERRORS.items()} == {
        "UNAVAILABLE": "NOQUORUM", "TIMEOUT": "TIMEOUT", "INVALID": "ERR", "OVERLOADED": "OVERLOADED",
        "INTERNAL": "ERR internal error:"}

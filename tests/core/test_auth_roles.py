"""Roles (shell/auth.py): every request type the node serves has a place, so a new
message cannot silently become reachable by everyone or by nobody but peers."""

from __future__ import annotations

import pytest

from quorumkv.core import wire
from quorumkv.core.messages_admin import Auth
from quorumkv.shell.auth import (
    ADMIN_TYPES, ALL_TYPES, ALLOWED_BY_ROLE, PEER_TYPES, READ_TYPES, WRITE_TYPES, Users, validate_users,
)


def test_every_request_type_is_classified_once():
    groups = [READ_TYPES, WRITE_TYPES, ADMIN_TYPES, PEER_TYPES]
    classified = set().union(*groups)
    assert classified == set(wire.REQUEST_TYPES) - {Auth}, "classify new request types in shell/auth.py"
    assert sum(len(g) for g in groups) == len(classified)  # no type in two groups


def test_roles_nest():
    ro, rw, admin, node = (ALLOWED_BY_ROLE[r] for r in ("readonly", "readwrite", "admin", "node"))
    assert ro < rw < admin < node == ALL_TYPES
    assert not (PEER_TYPES & admin)


def test_users_check_plain_and_hashed_passwords():
    import hashlib

    users = Users({"a": {"password": "pw", "role": "readonly"},
                   "b": {"password": "sha256:" + hashlib.sha256(b"secret").hexdigest(), "role": "admin"}},
                  resp_password="dflt")
    assert users.check("a", "pw") == "readonly" and users.check("a", "PW") is None
    assert users.check("b", "secret") == "admin" and users.check("nobody", "pw") is None
    assert users.check("default", "dflt") == "node"  # Redis's default user: every permission
    assert not Users({}).enabled


@pytest.mark.parametrize("bad, message", [
    ({"a": {"password": "", "role": "readonly"}}, "non-empty"),
    ({"a": {"password": "x", "role": "root"}}, "role must be one of"),
    ({"a": {"password": "x", "colour": "red"}}, "unknown keys"),
    ({"a": {"password": "sha256:abc"}}, "64 lowercase hex"),
    ({"a": "x"}, "expected a table"),
])
def test_bad_users_are_refused_with_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_users(bad)


def test_what_a_connection_may_send_before_auth():
    from quorumkv.shell.auth import NOTHING, open_types

    assert open_types(users=False, tls=False) == ALL_TYPES  # no security: as before
    assert open_types(users=True, tls=False) == NOTHING == open_types(users=True, tls=True)
    assert open_types(users=False, tls=True) == ALL_TYPES - PEER_TYPES  # TLS alone: peers need a certificate


def test_users_without_a_way_for_peers_to_authenticate_are_refused():
    from quorumkv.shell.config import NodeConfig

    users = {"a": {"password": "x", "role": "readwrite"}}
    with pytest.raises(ValueError, match="peers must authenticate"):
        NodeConfig(node_id="n1", listen="127.0.0.1:1", data_dir="/tmp/x", users=users)
    NodeConfig(node_id="n1", listen="127.0.0.1:1", data_dir="/tmp/x", users=users, resp_password="p")
    NodeConfig(node_id="n1", listen="127.0.0.1:1", data_dir="/tmp/x", users=users,
               internode_user="a", internode_password="x")


def test_readonly_may_run_a_linearizable_read_but_no_atomic_write():
    from types import SimpleNamespace

    from quorumkv.core.messages_cas import OP_GET, OP_SET, Atomic
    from quorumkv.shell import auth

    sent = []
    server = SimpleNamespace(stats=dict.fromkeys(auth.SECURITY_COUNTERS, 0), users=Users({}, "pw"))
    conn = SimpleNamespace(allowed=ALLOWED_BY_ROLE["readonly"], user="reader", peer_name="t", send=sent.append)
    assert auth.not_allowed(server, conn, Atomic(1, b"k", OP_GET), Atomic) is auth.RUN
    assert auth.not_allowed(server, conn, Atomic(2, b"k", OP_SET, b"v"), Atomic) is True  # refused, carries on
    assert "NOPERM" in sent[-1].message and server.stats["auth_denied"] == 1

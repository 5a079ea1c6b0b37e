"""Client methods for typed keys: causal siblings, counters, sets, maps.

Mixed into ``Client`` (blocking) and ``AsyncClient`` (asyncio) with the same names.
Message building and reply decoding live in ``_TypedBase`` and are shared; the two
mixins only differ in ``await``.

* Causal mode: ``get_siblings(key)`` -> ``Siblings(values, context)``;
  ``put(key, value, context=ctx)`` supersedes exactly the siblings ``ctx`` saw
  (``context=None``: no context, adds a sibling); ``delete(key, context=ctx)``.
  A plain ``get`` of a causal key returns its value when it has exactly one
  sibling and raises ``SiblingsError`` (naming ``get_siblings``) when it has more.
* ``counter_incr(key, delta)`` returns the counter's value as the applying replica
  saw it right after the increment; ``counter_value(key)`` reads it at R.
* ``sadd/srem/smembers``; ``hset/hget/hdel/hgetall``.

Typed updates are **not idempotent**: when the connection drops mid-request the
client does not resend them (a counter would count twice); it raises
``ConnectionFailedError`` and the update may or may not have been applied. See
docs/consistency.md, "Siblings and CRDTs".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..core import crdt, dvv, typed
from ..core import messages as m
from ..core.messages_typed import Update
from ..core.validation import level_to_wire, validate_key, validate_value
from ..core.version import Record
from ..errors import InvalidRequestError, QuorumKVError

if TYPE_CHECKING:  # base.py imports this module: names for the checker only
    from ..core import messages_cas as mc
    from ..core.dynamic import Target
    from .base import Data, Level, Resolver
    from .transport import Request


#: "the client's default R or W" (``None`` passed explicitly means the node's default)
_CLIENT_DEFAULT: Any = object()


class SiblingsError(QuorumKVError):
    """A plain read of a causal key that holds several concurrent values: read them all
    with ``get_siblings`` and write a resolution with its context."""


class Siblings(NamedTuple):
    values: list[bytes]  # every concurrent value (empty: missing or deleted)
    context: bytes  # opaque: pass it to put(..., context=) to supersede these values


def to_bytes(data: object, what: str) -> bytes:
    """``data`` as bytes (str is UTF-8 encoded); InvalidRequestError naming ``what`` otherwise."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidRequestError(f"{what} must be bytes or str, not {type(data).__name__}")


def state_from_reply(reply: m.Reply | mc.AtomicReply, kind: int) -> Any:
    """The ``kind`` state a read reply carries (empty when not found); WRONGTYPE as an
    InvalidRequestError when the key holds another type."""
    if reply.status == m.NOT_FOUND or reply.value is None or reply.version is None:
        return typed.empty(kind)
    try:
        return typed.state_of(Record(reply.version, reply.value), kind, now_ms=0)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None


def plain_value(reply: m.Reply | mc.AtomicReply) -> bytes | None:
    """A plain ``get``'s answer for a typed key: a causal key's only value (None: none)."""
    assert reply.version is not None, "called for a typed version only"
    kind = typed.kind_of(Record(reply.version, reply.value))
    if kind == typed.CAUSAL:
        values = dvv.values(state_from_reply(reply, kind))
        if len(values) > 1:
            raise SiblingsError(f"key has {len(values)} sibling values: read them with get_siblings "
                                "(RESP: QKV.SIBLINGS) and write a resolution with their context")
        return values[0] if values else None
    raise InvalidRequestError(f"WRONGTYPE key holds a {typed.KIND_NAMES[kind]}; use its own methods")


class _TypedBase:
    if TYPE_CHECKING:  # provided by base._Base, which every client also derives from
        r: int | str | None
        w: int | str | None
        resolver: Resolver | None
        _ids: Iterator[int]

        def _get_msg(self, key: Data, r: Level, primary_only: bool = False, blocking_repair: bool = False,
                     target: Target | None = None) -> m.Get: ...

    def _read(self, key: Data, r: Level) -> m.Get:
        return self._get_msg(key, self.r if r is _CLIENT_DEFAULT else r)

    def _update(self, key: Data, kind: int, action: str, args: Iterable[Data] = (), delta: int = 0,
                ctx: bytes | None = None, w: Level = _CLIENT_DEFAULT) -> Update:
        k = to_bytes(key, "key")
        validate_key(k)
        a = [to_bytes(x, "member, field or value") for x in args]
        if kind == typed.CAUSAL and a:
            validate_value(a[0])
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidRequestError(f"delta must be an integer, not {delta!r}")
        if ctx is not None and not isinstance(ctx, bytes):
            raise InvalidRequestError(f"context must be the bytes get_siblings returned, not {type(ctx).__name__}")
        try:
            typed.check_update(kind, action, a, ctx)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        level = level_to_wire(self.w if w is _CLIENT_DEFAULT else w)  # type: ignore[arg-type]  # not DEFAULT here
        return Update(next(self._ids), k, kind, action, a, delta, ctx, level)

    @staticmethod
    def _siblings(reply: m.Reply) -> Siblings:
        state = state_from_reply(reply, typed.CAUSAL)
        return Siblings(dvv.values(state), dvv.encode_context(dvv.context(state)))

    @staticmethod
    def _counter(reply: m.Reply) -> int:
        return crdt.counter_value(state_from_reply(reply, typed.COUNTER))

    @staticmethod
    def _members(reply: m.Reply) -> set[bytes]:
        return set(crdt.set_members(state_from_reply(reply, typed.SET)))

    @staticmethod
    def _fields(reply: m.Reply) -> dict[bytes, bytes]:
        return dict(crdt.map_items(state_from_reply(reply, typed.MAP)))

    @staticmethod
    def _hset_args(mapping: Mapping[Data, Data] | None, field: Data | None, value: Data | None) -> list[Data]:
        if mapping is not None:
            if field is not None or value is not None:
                raise InvalidRequestError("give a mapping or a field and a value, not both")
            return [x for kv in dict(mapping).items() for x in kv]
        if field is None or value is None:
            raise InvalidRequestError("hset needs a field and a value (or a mapping)")
        return [field, value]


class TypedMethods(_TypedBase):
    """The blocking client's typed methods (``self._call`` sends one request)."""

    if TYPE_CHECKING:
        def _call(self, msg: Request, retry: bool = True) -> Any: ...

    def _once(self, msg: Update) -> Any:
        return self._call(msg, retry=False)  # not idempotent: never resent

    def _resolve(self, key: Data, reply: m.Reply) -> bytes:
        """``Client(resolver=fn)``: ``fn(values)`` merges a causal key's siblings; the
        result is written back with their context (superseding exactly them)."""
        sib = self._siblings(reply)
        value = to_bytes(self.resolver(list(sib.values)), "the resolver's result")  # type: ignore[misc]  # set when called
        self._causal_write(key, value, sib.context, _CLIENT_DEFAULT)
        return value

    def get_siblings(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> Siblings:
        """Every concurrent value of a causal key, and the context to resolve them with."""
        return self._siblings(self._call(self._read(key, r)))

    def _causal_write(self, key: Data, value: Data | None, context: bytes | None, w: Level) -> int:
        args = [] if value is None else [value]
        reply: m.Reply = self._once(self._update(key, typed.CAUSAL, "del" if value is None else "put", args,
                                                 ctx=context or None, w=w))
        return reply.w_used

    def counter_incr(self, key: Data, delta: int = 1, *, w: Level = _CLIENT_DEFAULT) -> int:
        """Add ``delta`` (negative: subtract); the value right after, as the applying replica saw it."""
        return self._counter(self._once(self._update(key, typed.COUNTER, "incr", delta=delta, w=w)))

    def counter_value(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> int:
        return self._counter(self._call(self._read(key, r)))

    def sadd(self, key: Data, *members: Data, w: Level = _CLIENT_DEFAULT) -> None:
        self._once(self._update(key, typed.SET, "add", members, w=w))

    def srem(self, key: Data, *members: Data, w: Level = _CLIENT_DEFAULT) -> None:
        self._once(self._update(key, typed.SET, "rem", members, w=w))

    def smembers(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> set[bytes]:
        return self._members(self._call(self._read(key, r)))

    def hset(self, key: Data, mapping: Mapping[Data, Data] | None = None, *, field: Data | None = None,
             value: Data | None = None, w: Level = _CLIENT_DEFAULT) -> None:
        self._once(self._update(key, typed.MAP, "hset", self._hset_args(mapping, field, value), w=w))

    def hdel(self, key: Data, *fields: Data, w: Level = _CLIENT_DEFAULT) -> None:
        self._once(self._update(key, typed.MAP, "hdel", fields, w=w))

    def hget(self, key: Data, field: Data, *, r: Level = _CLIENT_DEFAULT) -> bytes | None:
        return self.hgetall(key, r=r).get(to_bytes(field, "field"))

    def hgetall(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> dict[bytes, bytes]:
        return self._fields(self._call(self._read(key, r)))


class AsyncTypedMethods(_TypedBase):
    """``TypedMethods`` for ``AsyncClient``: the same names, awaited."""

    if TYPE_CHECKING:
        async def _call(self, msg: Request, retry: bool = True) -> Any: ...

    async def _once(self, msg: Update) -> Any:
        return await self._call(msg, retry=False)  # not idempotent: never resent

    async def _resolve(self, key: Data, reply: m.Reply) -> bytes:
        sib = self._siblings(reply)
        value = to_bytes(self.resolver(list(sib.values)), "the resolver's result")  # type: ignore[misc]  # set when called
        await self._causal_write(key, value, sib.context, _CLIENT_DEFAULT)
        return value

    async def get_siblings(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> Siblings:
        return self._siblings(await self._call(self._read(key, r)))

    async def _causal_write(self, key: Data, value: Data | None, context: bytes | None, w: Level) -> int:
        args = [] if value is None else [value]
        reply: m.Reply = await self._once(self._update(key, typed.CAUSAL, "del" if value is None else "put", args,
                                                       ctx=context or None, w=w))
        return reply.w_used

    async def counter_incr(self, key: Data, delta: int = 1, *, w: Level = _CLIENT_DEFAULT) -> int:
        return self._counter(await self._once(self._update(key, typed.COUNTER, "incr", delta=delta, w=w)))

    async def counter_value(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> int:
        return self._counter(await self._call(self._read(key, r)))

    async def sadd(self, key: Data, *members: Data, w: Level = _CLIENT_DEFAULT) -> None:
        await self._once(self._update(key, typed.SET, "add", members, w=w))

    async def srem(self, key: Data, *members: Data, w: Level = _CLIENT_DEFAULT) -> None:
        await self._once(self._update(key, typed.SET, "rem", members, w=w))

    async def smembers(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> set[bytes]:
        return self._members(await self._call(self._read(key, r)))

    async def hset(self, key: Data, mapping: Mapping[Data, Data] | None = None, *, field: Data | None = None,
             value: Data | None = None, w: Level = _CLIENT_DEFAULT) -> None:
        await self._once(self._update(key, typed.MAP, "hset", self._hset_args(mapping, field, value), w=w))

    async def hdel(self, key: Data, *fields: Data, w: Level = _CLIENT_DEFAULT) -> None:
        await self._once(self._update(key, typed.MAP, "hdel", fields, w=w))

    async def hget(self, key: Data, field: Data, *, r: Level = _CLIENT_DEFAULT) -> bytes | None:
        return (await self.hgetall(key, r=r)).get(to_bytes(field, "field"))

    async def hgetall(self, key: Data, *, r: Level = _CLIENT_DEFAULT) -> dict[bytes, bytes]:
        return self._fields(await self._call(self._read(key, r)))

"""What every ``quorumkv`` command shares: exit codes, output formats, cluster
addressing, the client runner, the table printer — and the fast commands (``put``,
``get``, ``delete``) that both the argparse fast path (``fast.py``) and the Typer app
(``commands.py``) call.

Below every other module of ``cli/`` (they import it; it imports none of them), and as light
as ``fast.py`` itself: no Typer, no Rich (tests/io/test_cli_startup.py).
"""

from __future__ import annotations

import os
import sys
import warnings
from enum import Enum

from .. import errors
from ..core.limits import VALUE_BYTES_MAX

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_UNREACHABLE = 4
EXIT_INTERNAL = 5

class OutputFormat(str, Enum):
    """``-o/--output``: the formats every command implements (anything else is exit 2)."""

    table = "table"
    json = "json"


OUTPUT_FORMATS = tuple(f.value for f in OutputFormat)
#: ``put KEY -`` / ``put KEY --file F`` read at most this much (the value limit, plus
#: one byte to tell "exactly at the limit" from "over it") — never an unbounded read.
VALUE_READ_BYTES_MAX = VALUE_BYTES_MAX + 1


def _fail(code: int, message: str):
    """Print one line on stderr and exit with ``code``."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)


def _cluster(dir_: str):
    from .localcluster import LocalCluster

    cl = LocalCluster(dir_)
    if not cl.exists:
        _fail(EXIT_USAGE, f"no cluster in {dir_} (create one with `quorumkv cluster up --dir {dir_}`)")
    return cl


def _addresses(dir_: str | None, node: list[str] | None) -> list[str]:
    if node:
        return list(node)
    if dir_:
        return _cluster(dir_).addresses()
    env = os.environ.get("QUORUMKV_NODES")
    if env:
        return [a for a in env.split(",") if a]
    _fail(EXIT_USAGE, "say which cluster: --dir DIR or --node HOST:PORT (or set QUORUMKV_NODES)")
    return []


def exit_code_of(exc: BaseException) -> int:
    """The documented exit code for a quorumkv error."""
    if isinstance(exc, errors.NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, errors.InvalidRequestError):
        return EXIT_USAGE
    if isinstance(exc, errors.ConnectionFailedError):
        return EXIT_UNREACHABLE
    if isinstance(exc, errors.QuorumKVError):
        return EXIT_UNAVAILABLE
    return EXIT_INTERNAL


def _run_client(addresses: list[str], fn):
    from ..client import Client

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", errors.ConsistencyWarning)
        try:
            with Client(addresses) as c:
                result = fn(c)
        except errors.NotFoundError:
            _fail(EXIT_NOT_FOUND, "not found")
        except errors.QuorumKVError as exc:
            _fail(exit_code_of(exc), f"{type(exc).__name__}: {exc}")
        finally:
            for w in caught:
                if issubclass(w.category, errors.ConsistencyWarning):
                    print(f"warning: {w.message}", file=sys.stderr)
    return result


def read_value(value: str | None, file: str | None) -> bytes | str:
    """The value of ``put``: VALUE itself, stdin when VALUE is ``-``, or the file."""
    if file is not None:
        if value is not None:
            _fail(EXIT_USAGE, "give either VALUE or --file, not both")
        try:
            with open(file, "rb") as fh:
                return fh.read(VALUE_READ_BYTES_MAX)
        except OSError as exc:
            _fail(EXIT_USAGE, f"cannot read --file {file}: {exc.strerror or exc}")
    if value is None:
        _fail(EXIT_USAGE, "missing VALUE: give VALUE, - (read standard input) or --file F")
    if value == "-":
        return sys.stdin.buffer.read(VALUE_READ_BYTES_MAX)
    return value


# ---------------------------------------------------------------- the commands
def _consistency(linearizable: bool, *levels) -> str:
    if linearizable and any(x is not None for x in levels):
        _fail(EXIT_USAGE, "--linearizable uses a majority of the key's primaries: give no level or target with it")
    return "linearizable" if linearizable else "lww"


def cmd_put(key: str, value: str | None, w: str | None, dir: str | None, node: list[str] | None,
            target_latency_ms: float | None, verbose: bool, file: str | None, linearizable: bool = False) -> None:
    if target_latency_ms is not None and w is not None:
        _fail(EXIT_USAGE, "give either --w or --target-latency-ms, not both")
    mode = _consistency(linearizable, w, target_latency_ms)
    data = read_value(value, file)
    w_used = _run_client(_addresses(dir, node),
                         lambda c: c.put(key, data, w=w, target_latency_ms=target_latency_ms,
                                         consistency=mode))
    if verbose:
        print(f"w_used={w_used}", file=sys.stderr)


def cmd_get(key: str, r: str | None, dir: str | None, node: list[str] | None, target_fresh: float | None,
            within_ms: float | None, verbose: bool, linearizable: bool = False) -> None:
    mode = _consistency(linearizable, r, target_fresh, within_ms)
    target = None
    if target_fresh is not None or within_ms is not None:
        from ..core.dynamic import Target

        if r is not None:
            _fail(EXIT_USAGE, "give either --r or --target-fresh/--within-ms, not both")
        if target_fresh is None:
            _fail(EXIT_USAGE, "--within-ms needs --target-fresh P")
        try:
            target = Target(target_fresh, within_ms or 0.0)
        except errors.InvalidRequestError as exc:
            _fail(EXIT_USAGE, f"InvalidRequestError: {exc}")
    item = _run_client(_addresses(dir, node), lambda c: c.get_item(key, r=r, target=target,
                                                                 consistency=mode))
    if verbose:
        chosen = f" (chosen for P(fresh) >= {target.p_fresh:g} within {target.within_ms:g} ms)" if target else ""
        print(f"r_used={item.r_used}{chosen} version={item.version}", file=sys.stderr)
    if item.version is None or item.value is None:
        _fail(EXIT_NOT_FOUND, "not found")
    sys.stdout.buffer.write(item.value + b"\n")
    sys.stdout.flush()


def cmd_delete(key: str, w: str | None, dir: str | None, node: list[str] | None, linearizable: bool = False) -> None:
    mode = _consistency(linearizable, w)
    _run_client(_addresses(dir, node), lambda c: c.delete(key, w=w, consistency=mode))


#: ``cluster status`` colours per state (ANSI, only on a terminal and without NO_COLOR).
_STATE_COLOURS = {"up": "32", "suspect": "33", "joining": "36", "leaving": "36", "replacing": "36"}


def format_table(headers, rows, title: str = "", paint=None) -> str:
    """A plain aligned text table (``paint``: column index -> fn(text, cell) for colour)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(wd) for h, wd in zip(headers, widths)).rstrip())
    for row in rows:
        out = []
        for i, (cell, wd) in enumerate(zip(row, widths)):
            text = str(cell).ljust(wd)
            if paint and i in paint:
                text = paint[i](text, cell)
            out.append(text)
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)

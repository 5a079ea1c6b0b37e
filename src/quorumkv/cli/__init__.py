"""The ``quorumkv`` command line and the tools around it.

* ``fast.py`` — the entry point (``main``): ``get``/``put``/``delete``/``cluster
  status``/``--version`` parsed with argparse, without Typer or Rich;
* ``commands.py`` — the Typer app declaring every command (anything the fast path does
  not take goes there); the bigger commands live beside it: ``status``, ``repair``,
  ``cleanup``, ``ops`` (scan), ``snapshot``, ``certs``, ``math``, ``sim``, ``demo``,
  ``bench``;
* ``common.py`` — what every command shares (exit codes, output formats, cluster
  addressing, the fast commands themselves); it imports no other module of ``cli/``;
* ``localcluster.py`` (a local cluster of real node processes), ``redis_server.py``
  (a local ``redis-server``) and ``testing.py`` (free ports for test clusters).

Above every other layer: it may import the client, the node's shell (``serve``,
``NodeConfig``) and the simulator; nothing below imports it (tests/core/test_layers.py).
"""

from __future__ import annotations

from .fast import main

__all__ = ["main"]


def __getattr__(name: str) -> object:
    """``quorumkv.cli.app`` (every command registered) and ``cluster_app``."""
    if name in ("app", "cluster_app"):
        from . import fast  # noqa: PLC0415

        return getattr(fast, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

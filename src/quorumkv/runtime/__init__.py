"""The runtime between the pure core and its edges: one effect executor
(``executor.py``) and the three interfaces it runs against (``interfaces.py``:
Storage, Transport, Clock). Imports only ``core/``; the real node (``shell/``), the
simulator (``sim/``) and the tests supply the edges."""

from .executor import Executor, UnknownEffect, newest_hint
from .interfaces import Clock, Done, Reader, Storage, Transport

__all__ = ["Clock", "Done", "Executor", "Reader", "Storage", "Transport", "UnknownEffect", "newest_hint"]

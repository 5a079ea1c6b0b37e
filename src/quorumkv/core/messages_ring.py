"""Wire messages of one protocol family; ``messages.py`` folds them into the unions.

Tags: anti-entropy uses 40-49, ring changes 50-59 (frozen once released).
"""

from __future__ import annotations

from .messages import _Msg  # noqa: F401 - base class for this family's messages

RING_REQUESTS: tuple = ()
RING_RESPONSES: tuple = ()

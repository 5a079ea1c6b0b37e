"""Every wire message in one table: the unions the framing decodes into.

Each protocol family lives in its own module (``messages.py`` holds the base messages
and ``_Msg``; ``messages_ae``, ``_ring``, ``_scan``, ``_admin``, ``_typed``, ``_cas``
the families, each with its ``*_REQUESTS``/``*_RESPONSES`` tuple). This module sits
above all of them, so the imports run one way (families -> ``messages``, ``wire`` ->
all). A new family: add its module and its two tuples here. Tags never change once
released (``tests/core/test_core_framing.py`` pins them).
"""

from __future__ import annotations

from typing import Union

from .messages import BASE_REQUESTS, BASE_RESPONSES
from .messages_admin import ADMIN_REQUESTS, ADMIN_RESPONSES
from .messages_ae import AE_REQUESTS, AE_RESPONSES
from .messages_cas import CAS_REQUESTS, CAS_RESPONSES
from .messages_ring import RING_REQUESTS, RING_RESPONSES
from .messages_scan import SCAN_REQUESTS, SCAN_RESPONSES
from .messages_typed import TYPED_REQUESTS, TYPED_RESPONSES

REQUEST_TYPES = (BASE_REQUESTS + AE_REQUESTS + RING_REQUESTS + SCAN_REQUESTS + ADMIN_REQUESTS + TYPED_REQUESTS
                 + CAS_REQUESTS)
RESPONSE_TYPES = (BASE_RESPONSES + AE_RESPONSES + RING_RESPONSES + SCAN_RESPONSES + ADMIN_RESPONSES
                  + TYPED_RESPONSES + CAS_RESPONSES)
Request = Union[REQUEST_TYPES]  # type: ignore[valid-type]  # noqa: UP007 - built from a tuple
Response = Union[RESPONSE_TYPES]  # type: ignore[valid-type]  # noqa: UP007
Message = Union[REQUEST_TYPES + RESPONSE_TYPES]  # type: ignore[valid-type]  # noqa: UP007

"""The signature Estuary puts on its callbacks and HTTP events.

``X-Estuary-Signature: sha256=<hex>``, the HMAC-SHA256 of the request's body
under the shared secret; the body's ``time`` (Unix seconds) must be within a
minute of ours, so that a captured request cannot be replayed later.

>>> body = b'{"time": 1764460000}'
>>> signature = sign(body, "a secret of sixteen bytes or more")
>>> signature[:7], verify(body, signature, "a secret of sixteen bytes or more")
('sha256=', True)
>>> verify(body, signature, "another secret, just as long")
False
>>> is_fresh(1764460030, now=1764460000), is_fresh(1764460061, now=1764460000), is_fresh("1764460000", now=1764460000)
(True, False, False)
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from typing import Any

__all__ = ["MAX_SKEW", "SIGNATURE_HEADER", "is_fresh", "sign", "verify"]

#: The request header holding the signature.
SIGNATURE_HEADER = "X-Estuary-Signature"
#: How far a request's ``time`` may be from ours, in seconds.
MAX_SKEW = 60


def sign(body: bytes, secret: str) -> str:
    """The header value Estuary sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, secret: str) -> bool:
    """True when ``signature`` is the body's, compared in constant time."""
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(signature.encode("utf-8"), sign(body, secret).encode("ascii"))


def is_fresh(sent: Any, *, now: float | None = None, max_skew: float = MAX_SKEW) -> bool:
    """True when ``sent`` is a number of Unix seconds within ``max_skew`` of now."""
    if isinstance(sent, bool) or not isinstance(sent, (int, float)) or not math.isfinite(sent):
        return False
    return abs((time.time() if now is None else now) - sent) <= max_skew

"""Self-verifying request ids: any replica can check an id without a lookup.

An id is ``<uuid hex>.<number of instances>.<hmac>``, signed with the application's
secret, so ``/feedback`` can reject ids it never issued (and label lists of the wrong
length) on whichever replica it lands.

>>> ids = RequestIds(b"secret")
>>> rid = ids.issue(3)
>>> ids.instances(rid)
3
>>> ids.instances(rid[:-1] + ("0" if rid[-1] != "0" else "1")) is None
True
>>> RequestIds(b"other").instances(rid) is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid

_ID_RE = re.compile(r"^([0-9a-f]{32})\.([1-9][0-9]{0,6})\.([0-9a-f]{32})$")


def new_secret() -> str:
    """A fresh random signing secret (hex)."""
    return secrets.token_hex(32)


class RequestIds:
    """Issue and verify request ids signed with ``secret``."""

    def __init__(self, secret: bytes):
        if not secret:
            raise ValueError("the request id secret must not be empty")
        self._secret = secret

    def _sign(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self, instances: int) -> str:
        body = f"{uuid.uuid4().hex}.{instances}"
        return f"{body}.{self._sign(body)}"

    def instances(self, request_id: str) -> int | None:
        """How many instances the request had, or None when the id is not one of ours."""
        match = _ID_RE.match(request_id) if isinstance(request_id, str) else None
        if match is None:
            return None
        body = f"{match.group(1)}.{match.group(2)}"
        if not hmac.compare_digest(self._sign(body), match.group(3)):
            return None
        return int(match.group(2))


def token_digest(token: str) -> str:
    """The sha256 of a bearer token: what the deployment stores instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(authorization: str | None, digest: str | None) -> bool:
    """True when no token is required, or ``Authorization: Bearer <token>`` matches."""
    if digest is None:
        return True
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(token_digest(authorization[len("Bearer "):].strip()), digest)


__all__ = ["RequestIds", "new_secret", "token_digest", "token_matches"]

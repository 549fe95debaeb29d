"""The request signature of the reseller API, exactly as the docs page states it.

    X-Signature = hex(HMAC-SHA256(secret, timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n"
                                  + path_with_query + "\\n" + hex(sha256(body))))

The secret as shown when the key was issued is the HMAC key (its UTF-8 bytes); the
path is the one sent, query string included, undecoded; the body is the raw bytes
sent (empty for a GET). Pure functions, so the tests and the docs' example check
the same formula the server does.
"""

from __future__ import annotations

import hashlib
import hmac


def canonical(timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes) -> str:
    """The text a request's signature is computed over."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((timestamp, nonce, method.upper(), path_with_query, digest))


def sign(
    secret: str, timestamp: str, nonce: str, method: str, path_with_query: str, body: bytes
) -> str:
    """The lowercase hex signature a client sends in X-Signature."""
    text = canonical(timestamp, nonce, method, path_with_query, body)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def verify(
    secret: str,
    signature: str,
    timestamp: str,
    nonce: str,
    method: str,
    path_with_query: str,
    body: bytes,
) -> bool:
    """Whether `signature` is the request's, compared in constant time (an attacker
    timing the comparison learns nothing of the right one)."""
    expected = sign(secret, timestamp, nonce, method, path_with_query, body)
    return hmac.compare_digest(expected.encode(), signature.encode())

"""易支付's MD5 signature, written from the gateway's side and independently of the shop's.

The gateway signs (and checks) like this: take every parameter except `sign` and
`sign_type`, drop the ones whose value is empty, sort by name, join as `k=v&k=v` with the
raw (not URL-encoded) values, append the merchant key directly, and take the lowercase hex
MD5. Keeping a second implementation here means a shop that signs wrong fails its tests
instead of agreeing with itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

#: Parameters the signature never covers.
UNSIGNED = frozenset({"sign", "sign_type"})


def signing_string(params: Mapping[str, str]) -> str:
    """`k=v&k=v` over the signed parameters, sorted by name, empty values left out."""
    return "&".join(
        f"{name}={params[name]}"
        for name in sorted(params)
        if name not in UNSIGNED and params[name] != ""
    )


def sign(params: Mapping[str, str], key: str) -> str:
    """The `sign` a gateway computes for `params` with merchant key `key`."""
    return hashlib.md5((signing_string(params) + key).encode("utf-8")).hexdigest()

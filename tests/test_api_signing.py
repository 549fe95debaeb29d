"""The reseller API's signature, against the issue's formula computed here independently."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bot.api.signing import canonical, sign, verify

SECRET = "sk_test-secret-中"
REQUEST = ("1700000000", "n-0001", "POST", "/api/v1/orders?x=1", b'{"sku":"QB-10"}')


def by_the_issue(secret: str, timestamp: str, nonce: str, method: str, path: str, body: bytes):
    """timestamp \\n nonce \\n METHOD \\n path_with_query \\n hex(sha256(body)), HMAC-SHA256."""
    text = f"{timestamp}\n{nonce}\n{method}\n{path}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode("utf-8"), text.encode(), hashlib.sha256).hexdigest()


def test_the_canonical_text_is_the_issues_five_lines() -> None:
    digest = hashlib.sha256(REQUEST[4]).hexdigest()
    assert canonical(*REQUEST) == f"1700000000\nn-0001\nPOST\n/api/v1/orders?x=1\n{digest}"


def test_an_empty_body_hashes_the_empty_string() -> None:
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert canonical("1", "n", "get", "/api/v1/balance", b"").split("\n") == [
        "1", "n", "GET", "/api/v1/balance", empty,
    ]  # fmt: skip


def test_the_signature_is_lowercase_hex_hmac_sha256_keyed_with_the_secrets_utf8() -> None:
    signature = sign(SECRET, *REQUEST)
    assert signature == by_the_issue(SECRET, *REQUEST)
    assert signature == signature.lower()
    assert len(signature) == 64
    assert verify(SECRET, signature, *REQUEST)


@pytest.mark.parametrize(
    "change",
    ["secret", "timestamp", "nonce", "method", "path", "query", "body", "uppercase", "truncated"],
)
def test_any_change_breaks_the_signature(change: str) -> None:
    signature = sign(SECRET, *REQUEST)
    timestamp, nonce, method, path, body = REQUEST
    secret = SECRET
    match change:
        case "secret":
            secret = SECRET + "x"
        case "timestamp":
            timestamp = "1700000001"
        case "nonce":
            nonce = "n-0002"
        case "method":
            method = "PUT"
        case "path":
            path = "/api/v1/order?x=1"
        case "query":
            path = "/api/v1/orders?x=2"
        case "body":
            body = b'{"sku":"QB-50"}'
        case "uppercase":  # the formula says lowercase hex, so that is what is compared
            signature = signature.upper()
        case "truncated":
            signature = signature[:-1]
    assert not verify(secret, signature, timestamp, nonce, method, path, body)


def test_a_signature_that_is_no_ascii_is_refused_not_an_error() -> None:
    assert not verify(SECRET, "签名" * 32, *REQUEST)

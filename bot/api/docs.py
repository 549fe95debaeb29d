"""`/api/v1/docs`: the page a reseller's developer reads, with examples that run.

The Python example uses only the standard library (hmac, hashlib, urllib) and is
taken from this module by a test and run against a live server, so the page never
shows a signature that does not work. The endpoint list comes from the route table.
"""

from __future__ import annotations

import html

from bot.api.guard import REPLAY_WINDOW, SIGNED_HEADERS
from bot.api.routes import ROUTES

PYTHON_EXAMPLE = '''\
import hashlib, hmac, json, os, secrets, time, urllib.error, urllib.request

API = os.environ.get("CARDSHOP_API", "http://127.0.0.1:8080")
KEY_ID = os.environ["CARDSHOP_KEY_ID"]   # ak_...
SECRET = os.environ["CARDSHOP_SECRET"]   # sk_..., shown once when the key was issued


def call(method, path, payload=None):
    """Send a signed request; returns (status, JSON answer)."""
    body = b"" if payload is None else json.dumps(payload).encode()
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    text = "\\n".join([timestamp, nonce, method, path, hashlib.sha256(body).hexdigest()])
    signature = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(API + path, data=body or None, method=method, headers={
        "X-Api-Key": KEY_ID, "X-Timestamp": timestamp, "X-Nonce": nonce,
        "X-Signature": signature, "Content-Type": "application/json",
    })
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


if __name__ == "__main__":
    print(call("GET", "/api/v1/balance"))
    products = call("GET", "/api/v1/products")[1]["products"]
    sku = os.environ.get("CARDSHOP_SKU", products[0]["sku"])
    order = {"sku": sku, "quantity": 1, "idempotency_key": secrets.token_hex(8)}
    print(call("POST", "/api/v1/orders", order))
'''

CURL_EXAMPLE = """\
KEY_ID=ak_...; SECRET=sk_...; API=http://127.0.0.1:8080
BODY='{"sku":"QB-10","quantity":1,"idempotency_key":"order-0001"}'
TS=$(date +%s); NONCE=$(openssl rand -hex 16)
HASH=$(printf '%s' "$BODY" | openssl dgst -sha256 -r | cut -d' ' -f1)
SIG=$(printf '%s\\n%s\\n%s\\n%s\\n%s' "$TS" "$NONCE" POST /api/v1/orders "$HASH" \\
      | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
curl -sS -X POST "$API/api/v1/orders" -H 'Content-Type: application/json' \\
     -H "X-Api-Key: $KEY_ID" -H "X-Timestamp: $TS" -H "X-Nonce: $NONCE" \\
     -H "X-Signature: $SIG" --data "$BODY"
"""


def page() -> str:
    """The docs page as HTML (English, like the API's messages)."""
    rows = "".join(
        f"<tr><td><code>{route.method}</code></td><td><code>{html.escape(route.path)}</code>"
        f"</td><td>{html.escape(route.summary)}"
        + (f" <em>(needs <code>{route.capability}</code>)</em>" if route.capability else "")
        + "</td></tr>"
        for route in ROUTES
    )
    headers = ", ".join(f"<code>{name}</code>" for name in SIGNED_HEADERS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Reseller API</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:1rem;overflow-x:auto}}td{{padding:.2rem .6rem;vertical-align:top}}
</style></head><body>
<h1>Reseller API (API接口对接)</h1>
<p>Buy codes from your own site or bot with your member level's prices. Members whose level
includes API access create a key in the bot (🔑 API); the secret is shown once. Amounts are
integers in 分 (1/100 of the currency, named beside each amount); times are ISO 8601.
The machine-readable description is <a href="openapi.json">openapi.json</a>.</p>

<h2>Signing a request</h2>
<p>Every request under <code>/api/v1/</code> but this page and <code>openapi.json</code>
sends the headers {headers}:</p>
<ul>
<li><code>X-Api-Key</code>: the key id (<code>ak_…</code>);</li>
<li><code>X-Timestamp</code>: unix seconds now; more than {REPLAY_WINDOW} s from the
server's clock is refused;</li>
<li><code>X-Nonce</code>: a fresh random string (1–64 visible ASCII characters) for every
request; one seen before with your key is refused;</li>
<li><code>X-Signature</code>: lowercase hex HMAC-SHA256, keyed with the secret as shown
(its UTF-8 bytes), over</li>
</ul>
<pre>timestamp + "\\n" + nonce + "\\n" + METHOD + "\\n" + path_with_query + "\\n"
  + hex(sha256(body))</pre>
<p><code>path_with_query</code> is the path exactly as sent, with its query string
(<code>/api/v1/orders?since=2026-11-22T00:00:00%2B08:00</code>); the body is the exact bytes
sent, empty for GET and DELETE. A request that fails any of these is answered 401 and
changes nothing.</p>

<h2>Python (standard library only)</h2>
<p>Set <code>CARDSHOP_API</code>, <code>CARDSHOP_KEY_ID</code> and
<code>CARDSHOP_SECRET</code>, then run it: it shows your balance and buys one code.</p>
<pre><code>{html.escape(PYTHON_EXAMPLE)}</code></pre>

<h2>curl</h2>
<pre><code>{html.escape(CURL_EXAMPLE)}</code></pre>

<h2>Endpoints</h2>
<table>{rows}</table>

<h2>Answers and refusals</h2>
<p>A refusal is always <code>{{"error": code, "message": English text, "params": {{…}}}}</code>:
400 the body is not JSON; 401 the signature, timestamp or nonce; 403 your level does not
include this (the message says why); 404 not found (or not yours); 409 the shop refused
(<code>out_of_stock</code>, <code>insufficient_balance</code>, <code>price_above_limit</code>,
<code>idempotency_conflict</code>…); 422 a field is missing or wrong; 429 too many requests
for your key (per minute, by member level; wait <code>Retry-After</code> seconds).</p>
<p>Orders are exactly once per <code>idempotency_key</code>: after a timeout, send the same
request again (a new nonce, the same key) and you get the same order and codes, never a
second charge. <code>max_total</code> refuses the order if the price has risen above it.</p>
</body></html>
"""

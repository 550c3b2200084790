"""A differential test of the trust boundary: what the client sent vs what the upstream got.

Hypothesis writes raw byte streams (framing right and wrong, compressed bodies,
`Connection` tokens naming framing and identity fields, every spelling of the identity
and credential fields, pipelines of up to three requests with good and bad keys, `Expect:
100-continue`) and sends them over a real socket through the boundary tests' gateway
(conftest.py) to the recording upstream (tests/support/recording_upstream.py), which
answers before reading bodies, keeps connections alive and parses strictly. Whatever the
gateway accepts or refuses, these must hold on what the upstream parsed:

(a) each request the upstream parsed is one the gateway authorised, once; the client got
    the upstream's 2xx for exactly those;
(b) its body is the bytes the client sent (de-chunked), never decompressed; a body cut
    short only ever ends its upstream connection;
(c) identity fields (canonical `x-keygate-*`, `forwarded`, `x-real-ip`,
    `x-forwarded-for`) are the gateway's alone: one of each, the key's values;
(d) nothing else: no request the client did not send as an authorised one, and nothing
    a strict parser refuses.

A bounded run here; tests/perf/fuzz_boundary.py runs the same property for longer.
"""

from __future__ import annotations

import gzip
import os
import uuid
import zlib
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integration.boundary.recorded import (
    MAX_BODY,
    Exchange,
    RawClient,
    Recorded,
    canonical,
)
from tests.support.recording_upstream import SEEN_HEADER
from tests.support.recording_upstream import Recorded as Seen

EXAMPLES = int(os.environ.get("KEYGATE_DIFFERENTIAL_EXAMPLES", "50"))
HOST = "api.example"

# ---------------------------------------------------------------------------------------
# The model: one client-framed request, and how it is written on the wire.


@dataclass
class Request:
    rid: str
    method: str
    key: str  # good | bad | read_only | none | alias
    credential: str  # the header name carrying the key
    payload: bytes
    encoding: str | None  # Content-Encoding applied to the payload
    framing: str
    chunk_sizes: list[int]
    chunk_style: str
    trailers: list[tuple[str, str]]
    connection: list[str]
    spoofs: list[tuple[str, str]]
    expect: bool = False


@dataclass
class Wire:
    """A request rendered: head, the bytes after it, and what an honest upstream gets."""

    rid: str
    method: str
    authorised: bool  # carries the good key (the gateway may still refuse its framing)
    head: bytes
    after: bytes  # body bytes, and for some framings the next client-framed requests
    body: bytes  # the body as framed by the client (what the upstream must receive)
    extra_ids: list[str] = field(default_factory=list)  # requests hidden in `after`
    content_encoding: str | None = None
    expect: bool = False


IDENTITY = [
    "X-Keygate-Org",
    "X-Keygate-Key-Id",
    "X-Keygate-Scopes",
    "X-Keygate-Env",
    "Forwarded",
    "X-Real-IP",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Request-Id",
]
FRAMING_FIELDS = [
    "Content-Length",
    "Transfer-Encoding",
    "Content-Encoding",
    "Content-Type",
    "Host",
    "Connection",
]
FRAMINGS = [
    "cl",
    "cl",
    "chunked",
    "chunked",
    "none",
    "cl_short",
    "cl_long",
    "cl_dup_same",
    "cl_dup_diff",
    "cl_list",
    "cl_zeros",
    "cl_te",
    "te_variant",
    "te_alias",
    "cl_alias",
    "chunked_bad",
]
TE_VARIANTS = [
    "Chunked",
    "CHUNKED",
    "chunked, chunked",
    "gzip, chunked",
    "identity",
    "chunked, identity",
    "chunked;q=1",
    "\tchunked",
    "chunk",
    "xchunked",
]
BAD_CHUNK_SIZES = [b"0x5", b"-5", b"+5", b"5 5", b"fffffffffffffffffff5", b"", b"g"]


def _name_spelling(name: str) -> st.SearchStrategy[str]:
    def spell(seps: list[str], case: str) -> str:
        parts = name.split("-")
        joined = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=False))
        return {"lower": joined.lower(), "upper": joined.upper(), "as is": joined}[case]

    return st.builds(
        spell,
        st.lists(st.sampled_from("-_."), min_size=name.count("-"), max_size=name.count("-")),
        st.sampled_from(["lower", "upper", "as is"]),
    )


def smuggled(rid: str) -> bytes:
    """A request an attacker hides in a body or after a short length: no key, forged
    identity, its own request id."""
    return (
        f"POST /d/smuggled HTTP/1.1\r\nHost: {HOST}\r\nX-Request-Id: {rid}\r\n"
        "X-Keygate-Org: evil\r\nX_Keygate_Scopes: *\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@st.composite
def requests(draw: st.DrawFn, last: bool) -> Request:
    rid = "d-" + uuid.uuid4().hex
    key = draw(st.sampled_from(["good", "good", "good", "bad", "read_only", "none", "alias"]))
    credential = draw(st.sampled_from(["Authorization", "authorization", "X-API-Key", "x-api-key"]))
    raw = draw(st.binary(max_size=200))
    payload = draw(st.sampled_from([b"", raw, raw + smuggled("s-" + uuid.uuid4().hex)]))
    encoding = draw(st.sampled_from([None, None, "gzip", "deflate"]))
    framing = draw(st.sampled_from(FRAMINGS if last else [f for f in FRAMINGS if f != "cl_long"]))
    chunk_sizes = draw(st.lists(st.integers(1, 64), max_size=6))
    chunk_style = draw(st.sampled_from(["lower", "upper", "zeros", "ext", "plain"]))
    trailers = draw(
        st.lists(
            st.tuples(
                st.one_of(*[_name_spelling(n) for n in [*IDENTITY, "X-Trailer", "Content-Length"]]),
                st.just("trailer-spoof"),
            ),
            max_size=2,
        )
    )
    connection = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["keep-alive", "close", "Upgrade", "x-custom"]),
                *[_name_spelling(n) for n in [*FRAMING_FIELDS, *IDENTITY[:3]]],
            ),
            max_size=3,
        )
    )
    # (Credentials in their own spelling are the credential: only their aliases spoof.)
    aliases = [
        _name_spelling(n).filter(lambda s: "_" in s or "." in s)
        for n in ("X-API-Key", "Proxy-Authorization")
    ]
    spoofs = draw(
        st.lists(
            st.tuples(
                st.one_of(*[_name_spelling(n) for n in IDENTITY], *aliases), st.just("spoofed")
            ),
            max_size=4,
        )
    )
    expect = last and draw(st.booleans())
    return Request(
        rid,
        draw(st.sampled_from(["POST", "PUT", "PATCH"])),
        key,
        credential,
        payload,
        encoding,
        framing,
        chunk_sizes,
        chunk_style,
        trailers,
        connection,
        spoofs,
        expect,
    )


@st.composite
def pipelines(draw: st.DrawFn) -> list[Request]:
    count = draw(st.integers(1, 3))
    return [draw(requests(last=i == count - 1)) for i in range(count)]


def _chunked(data: bytes, sizes: list[int], style: str, trailers: list[tuple[str, str]]) -> bytes:
    out = bytearray()
    pos = 0
    sizes = sizes or [len(data) or 1]
    i = 0
    while pos < len(data):
        size = min(sizes[i % len(sizes)], len(data) - pos)
        i += 1
        text = f"{size:x}"
        text = {"upper": text.upper(), "zeros": text.zfill(4)}.get(style, text)
        ext = ";ext=1;x" if style == "ext" else ""
        out += f"{text}{ext}\r\n".encode() + data[pos : pos + size] + b"\r\n"
        pos += size
    out += b"0\r\n"
    out += b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers)
    return bytes(out + b"\r\n")


def render(req: Request, keys: dict[str, str]) -> Wire:
    payload = req.payload
    if req.encoding == "gzip":
        payload = gzip.compress(payload, mtime=0)
    elif req.encoding == "deflate":
        payload = zlib.compress(payload)
    lines = [f"{req.method} /d/{req.rid} HTTP/1.1", f"Host: {HOST}", f"X-Request-Id: {req.rid}"]
    key = keys.get(req.key)
    if req.key == "alias":  # the right key under a name the gateway does not read
        lines.append(f"X_Api_Key: {keys['good']}")
    elif key is not None:
        value = f"Bearer {key}" if req.credential.lower() == "authorization" else key
        lines.append(f"{req.credential}: {value}")
    if req.encoding:
        lines.append(f"Content-Encoding: {req.encoding}")
    lines.append("Content-Type: application/octet-stream")
    if req.connection:
        lines.append("Connection: " + ", ".join(req.connection))
    lines += [f"{n}: {v}" for n, v in req.spoofs]
    if req.expect:
        lines.append("Expect: 100-continue")
    body, after, extra = payload, payload, []
    n = len(payload)
    f = req.framing
    if f == "cl":
        lines.append(f"Content-Length: {n}")
    elif f == "none":
        body, extra_id = b"", "x-" + uuid.uuid4().hex
        after, extra = smuggled(extra_id), [extra_id]
    elif f == "cl_short":
        extra_id = "x-" + uuid.uuid4().hex
        cut = n // 2
        lines.append(f"Content-Length: {cut}")
        body, after, extra = payload[:cut], payload[:cut] + smuggled(extra_id), [extra_id]
    elif f == "cl_long":
        lines.append(f"Content-Length: {n + 7}")
        body = payload + b"\0" * 7  # never all sent: the upstream must not see it whole
    elif f == "cl_dup_same":
        lines += [f"Content-Length: {n}", f"content-length: {n}"]
    elif f == "cl_dup_diff":
        lines += [f"Content-Length: {n}", f"Content-Length: {n + 1}"]
    elif f == "cl_list":
        lines.append(f"Content-Length: {n}, {n}")
    elif f == "cl_zeros":
        lines.append(f"Content-Length: 000{n}")
    elif f in ("chunked", "te_variant", "cl_te", "te_alias", "chunked_bad"):
        after = _chunked(payload, req.chunk_sizes, req.chunk_style, req.trailers)
        if f == "chunked_bad":
            after = BAD_CHUNK_SIZES[len(payload) % len(BAD_CHUNK_SIZES)] + b"\r\n" + after
        te = TE_VARIANTS[len(payload) % len(TE_VARIANTS)] if f == "te_variant" else "chunked"
        if f == "te_alias":
            lines += [f"Content-Length: {len(after)}", "Transfer_Encoding: chunked"]
            body = after
        else:
            lines.append(f"Transfer-Encoding: {te}")
        if f == "cl_te":
            lines.append(f"Content-Length: {n}")
    elif f == "cl_alias":
        lines += [f"Content-Length: {n}", f"Content_Length: {n + 5}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Wire(
        req.rid, req.method, req.key == "good", head, after, body, extra, req.encoding, req.expect
    )


# ---------------------------------------------------------------------------------------
# Running one pipeline and checking the invariants.


def run(rec: Recorded, wires: list[Wire]) -> Exchange:
    expected = sum(1 + len(w.extra_ids) for w in wires)
    with RawClient(rec.port) as client:
        for w in wires:
            if w.expect:
                client.send(w.head)
                client.read_until(expected, interim=True, idle=1.5)
                if 100 in client.interim:
                    client.send(w.after)
            else:
                client.send(w.head + w.after)
        client.read_until(expected, idle=1.5)
        return client.exchange()


def check(rec: Recorded, wires: list[Wire], exchange: Exchange) -> list[str]:
    """Every broken invariant, as a sentence (empty when the boundary held)."""
    rec.upstream.settle()
    seen, errors = rec.upstream.snapshot()
    problems = [
        f"(d) the upstream could not parse what it got: {e.reason} {e.rest[:80]!r}" for e in errors
    ]
    sent = {w.rid: w for w in wires}
    authorised = {w.rid for w in wires if w.authorised}
    upstream_2xx = {
        a.one(SEEN_HEADER) for a in exchange.answers if 200 <= a.status < 300 and a.one(SEEN_HEADER)
    }
    recorded_ids: list[str | None] = [r.request_id for r in seen]
    for r in seen:
        rid = r.request_id
        what = f"{r.head.method} {r.head.target} (id {rid})"
        if rid not in authorised:
            problems.append(f"(d) the upstream parsed a request nobody authorised: {what}")
            continue
        if recorded_ids.count(rid) != 1:
            problems.append(f"(a) {what} reached the upstream {recorded_ids.count(rid)} times")
        w = sent[rid]
        if (r.head.method, r.head.target) != (w.method, f"/d/{rid}"):
            problems.append(f"(d) {what} is not the request the client sent")
        if r.complete and r.body != w.body:
            problems.append(
                f"(b) {what}: body {r.body[:60]!r}… differs from the client's "
                f"{w.body[:60]!r}… ({len(r.body)} vs {len(w.body)} bytes)"
            )
        if not r.complete and not r.last_on_connection:
            problems.append(f"(b) {what}: body cut short on a connection that went on")
        problems += [f"(c) {what}: {p}" for p in identity_problems(rec, r, w)]
    for rid in upstream_2xx - set(recorded_ids):
        problems.append(f"(a) the client got an upstream 2xx for {rid}, never recorded")
    for rid in set(recorded_ids) - upstream_2xx:
        if rid in authorised and not exchange.reset:
            problems.append(f"(a) {rid} reached the upstream but its answer never the client")
    last = wires[-1]
    if 100 in exchange.interim and not (last.expect and last.authorised):
        problems.append("(a) 100 Continue sent for a request that was not authorised")
    return problems


def identity_problems(rec: Recorded, r: Seen, w: Wire) -> list[str]:
    key = rec.keys.good
    by_name: dict[str, list[tuple[str, str]]] = {}
    for name, value in r.head.fields:
        by_name.setdefault(canonical(name), []).append((name, value))
    want = {
        "x-keygate-credential": "key",
        "x-keygate-org": key.org,
        "x-keygate-key-id": key.display_prefix,
        "x-keygate-scopes": " ".join(key.scopes),
        "x-keygate-env": key.env,
        "x-real-ip": "127.0.0.1",
        "x-forwarded-for": "127.0.0.1",
        "forwarded": f"for=127.0.0.1;host={HOST};proto=http",
        "x-forwarded-host": HOST,
        "x-request-id": w.rid,
    }
    problems = []
    for name, value in want.items():
        got = by_name.get(name, [])
        if [v for _, v in got] != [value] or any("_" in n or "." in n for n, _ in got):
            problems.append(f"{name} arrived as {got}, expected exactly [{value!r}]")
    extra = sorted(n for n in by_name if n.startswith("x-keygate-") and n not in want)
    if extra:
        problems.append(f"identity fields the gateway never sets: {extra}")
    for name in (
        "authorization",
        "x-api-key",
        "proxy-authorization",
        "expect",
        "connection",
        "transfer-encoding" if "content-length" in by_name else "-",
    ):
        if name in by_name:
            problems.append(f"{name} passed: {by_name[name]}")
    for name in ("content-length", "transfer-encoding", "content-encoding", "host"):
        if any("_" in n or "." in n for n, _ in by_name.get(name, [])):
            problems.append(f"an alias of {name} passed: {by_name[name]}")
    encoding = [v for _, v in by_name.get("content-encoding", [])]
    if encoding != ([w.content_encoding] if w.content_encoding else []):
        problems.append(f"content-encoding {encoding} but the client sent {w.content_encoding}")
    spoofed = [
        f for f in r.trailers if canonical(f[0]).startswith("x-keygate-") or canonical(f[0]) in want
    ]
    if spoofed or any(v == "spoofed" for _, v in r.head.fields):
        problems.append(f"client-sent identity values passed: {spoofed or r.head.fields}")
    return problems


# ---------------------------------------------------------------------------------------
# The test.


def key_table(rec: Recorded) -> dict[str, str]:
    return {
        "good": rec.keys.good.secret,
        "bad": rec.keys.bad_secret,
        "read_only": rec.keys.read_only.secret,
    }


def check_pipeline(rec: Recorded, pipeline: list[Request]) -> None:
    """Send one pipeline through the gateway; fail with every broken invariant and the
    bytes that reproduce it."""
    assert rec.gateway.process.alive(), rec.gateway.process.tail()
    rec.upstream.settle()
    rec.upstream.clear()
    wires = [render(req, key_table(rec)) for req in pipeline]
    exchange = run(rec, wires)
    problems = check(rec, wires, exchange)
    # Shown by --hypothesis-show-statistics: what the examples exercised.
    for req in pipeline:
        event(f"framing {req.framing}, key {req.key}")
    event(f"statuses {[a.status for a in exchange.answers]}, closed {exchange.closed}")
    event(f"upstream parsed {len(rec.upstream.snapshot()[0])}")
    if problems:
        stream = b"".join(w.head + w.after for w in wires)
        for name, secret in key_table(rec).items():  # reproducible without leaking keys
            stream = stream.replace(secret.encode(), f"<{name} key>".encode())
        statuses = [a.status for a in exchange.answers]
        raise AssertionError(
            "\n".join(problems)
            + f"\nstatuses {statuses}, interim {exchange.interim}, closed {exchange.closed}"
            + f"\nclient bytes: {stream!r}"
        )


assert MAX_BODY >= 2 * 1024  # the payloads drawn stay under the route's max_body


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pipeline=pipelines())
def test_the_upstream_only_ever_sees_what_the_gateway_authorised(
    boundary: Recorded, pipeline: list[Request]
) -> None:
    check_pipeline(boundary, pipeline)

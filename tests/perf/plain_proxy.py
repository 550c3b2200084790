"""A plain aiohttp pass-through proxy: the baseline Keygate is measured against.

No authentication, no routes, no metrics, no access log. Otherwise built like Keygate's
forwarding path so the comparison isolates what Keygate adds:

- aiohttp's low-level ``web.Server`` (no Application/router), ``handler_cancellation=True``,
  ``access_log=None``, on uvloop when installed;
- one pooled keep-alive ``ClientSession`` per worker, same connector and session options
  as ``gateway.proxy.upstreams.open_upstreams``;
- request body streamed (``request.content``), response streamed with ``iter_any``;
- hop-by-hop headers and ``Host`` dropped (any correct proxy must do that much);
- ``--workers N`` runs N processes sharing the port with SO_REUSEPORT (spawned like
  ``keygate serve --workers N``; with 1 worker it runs in the main process).

    python tests/perf/plain_proxy.py --port 18080 --upstream http://127.0.0.1:18000 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, istr
from yarl import URL

DROP = frozenset(
    istr(h)
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
    )
)
DROP_RESPONSE = DROP | {istr("Server"), istr("Date")}


def _session(max_connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=max_connections,
        keepalive_timeout=30,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=30),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


def make_handler(session: aiohttp.ClientSession, upstream: str):  # type: ignore[no-untyped-def]
    base = upstream.rstrip("/")

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k not in DROP)
        body = request.content if request.body_exists else None
        try:
            async with session.request(
                request.method,
                URL(base + request.raw_path, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            ) as reply:
                response = web.StreamResponse(
                    status=reply.status,
                    reason=reply.reason,
                    headers=CIMultiDict(
                        (k, v) for k, v in reply.headers.items() if k not in DROP_RESPONSE
                    ),
                )
                await response.prepare(request)
                async for chunk in reply.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (TimeoutError, aiohttp.ClientError):
            return web.Response(status=502, text="bad gateway\n")

    return handle


async def run_worker(host: str, port: int, upstream: str, reuse_port: bool) -> None:
    session = _session(256)
    runner = web.ServerRunner(
        web.Server(make_handler(session, upstream), handler_cancellation=True, access_log=None),
        handle_signals=False,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=2048).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()


def run(host: str, port: int, upstream: str, reuse_port: bool) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(run_worker(host, port, upstream, reuse_port))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_worker(host, port, upstream, reuse_port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        run(args.host, args.port, args.upstream, False)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=run, args=(args.host, args.port, args.upstream, True))
        for _ in range(args.workers)
    ]
    for proc in procs:
        proc.start()

    def forward(_signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()

"""A trivial upstream for the benchmark: every request gets the same small 200 answer.

aiohttp's low-level server on uvloop, no routing, no body echo, so the upstream costs as
little CPU as a Python server can (the echo upstream of ``gateway.demo_upstream`` hashes
and JSON-encodes every request, which would make it the bottleneck).

    python tests/perf/fixed_upstream.py --port 18000 [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal

from aiohttp import web

BODY = b'{"ok":true,"items":[1,2,3],"note":"fixed benchmark response"}\n'


async def _handle(request: web.BaseRequest) -> web.Response:
    if request.body_exists:
        await request.read()
    return web.Response(body=BODY, content_type="application/json")


async def _serve(host: str, port: int, reuse_port: bool) -> None:
    runner = web.ServerRunner(web.Server(_handle, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=2048).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def run(host: str, port: int, reuse_port: bool) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(host, port, reuse_port))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(host, port, reuse_port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers == 1:
        run(args.host, args.port, False)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=run, args=(args.host, args.port, True)) for _ in range(args.workers)
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

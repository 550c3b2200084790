"""A rolling update, end to end (SPEC §9, issue 11): `keygate serve --workers 2` gets
SIGTERM while clients hammer it on fresh and keep-alive connections. /readyz must say
"draining" at once, every request sent while load balancers react must succeed, keep-alive
clients must be told to move (`Connection: close`), and the process must exit 0 once the
drain delay is over; and a store outage alone must not take the instance out of service.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.lifecycle.conftest import OwnStores
from tests.support.configs import gateway_config, gateway_env
from tests.support.gateway_process import GatewayProcess, UpstreamProcess, start_gateway
from tests.support.keys import MadeKey, key_maker

DRAIN_DELAY = 2.0
# Load balancers stop sending within this after /readyz turns 503 (the hammer stops then,
# leaving the rest of the delay for requests already sent).
LB_REACTS = DRAIN_DELAY - 0.5
READYZ_POLL = 0.01


def lifecycle_config(upstream: UpstreamProcess, **server: str) -> dict[str, Any]:
    routes = [
        {
            "path": "/api/read/**",
            "methods": ["GET"],
            "upstream": "echo",
            "scopes": ["read"],
            "name": "read",
        }
    ]
    upstreams = {"echo": {"url": upstream.url, "connect_timeout": "2s", "timeout": "10s"}}
    return gateway_config(
        upstreams,
        routes,
        log={"level": "info", "access_log": False},
        server={"drain_timeout": "5s", "store_timeout": "1s", **server},
    )


async def readyz(http: aiohttp.ClientSession, gw: GatewayProcess) -> tuple[int, Any]:
    async with http.get(gw.admin_url + "/readyz") as reply:
        return reply.status, await reply.json()


@dataclass
class Hammer:
    """Clients sending GETs until `stop` is set; every outcome kept with its send time."""

    url: str
    key: MadeKey
    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    closes_after_signal: int = 0  # keep-alive answers saying `Connection: close`
    signalled: float | None = None

    async def client(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                async with session.get(self.url, headers=self.key.auth) as reply:
                    await reply.read()
                    if reply.status != 200:
                        self.failures.append((sent, f"status {reply.status}"))
                        continue
                    self.ok += 1
                    closing = reply.headers.get("Connection", "").lower() == "close"
                    if closing and self.signalled is not None and sent > self.signalled:
                        self.closes_after_signal += 1
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.failures.append((sent, type(exc).__name__))


async def test_sigterm_drains_without_a_failed_request(
    own_stores: OwnStores, echo_upstream: UpstreamProcess, log_dir: Path
) -> None:
    gw = start_gateway(
        lifecycle_config(echo_upstream, drain_delay=f"{DRAIN_DELAY:g}s"),
        log_dir,
        gateway_env(own_stores),
        name="gw-rollout",
        workers=2,
    )
    try:
        async with key_maker(gw.config_path, gw.env) as keys:
            key = await keys.key(["read"])
        timeout = aiohttp.ClientTimeout(total=10)
        fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0), timeout=timeout
        )
        kept = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4), timeout=timeout)
        probes = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=timeout
        )
        async with fresh, kept, probes:
            assert await readyz(probes, gw) == (
                200,
                {"status": "ready", "stores": {"postgres": "up", "redis": "up"}},
            )
            hammer = Hammer(gw.url + "/api/read/rollout", key)
            stop = asyncio.Event()
            clients = [asyncio.create_task(hammer.client(fresh, stop)) for _ in range(4)]
            clients += [asyncio.create_task(hammer.client(kept, stop)) for _ in range(4)]
            await asyncio.sleep(0.5)
            assert hammer.ok > 0 and not hammer.failures, hammer.failures

            gw.process.proc.send_signal(signal.SIGTERM)
            signalled = hammer.signalled = time.monotonic()
            seen: list[tuple[float, int, str]] = []  # /readyz after the signal
            while time.monotonic() - signalled < LB_REACTS:
                status, body = await readyz(probes, gw)
                seen.append((time.monotonic() - signalled, status, body["status"]))
                await asyncio.sleep(READYZ_POLL)
            stop.set()  # the load balancer has moved the traffic away
            await asyncio.gather(*clients)
            sent_after = hammer.ok  # (counted below with the failures)
        code = await asyncio.to_thread(gw.process.proc.wait, 20)
        exited = time.monotonic() - signalled
    except BaseException:
        gw.process.kill()
        raise
    gw.process.stop(expect_code=0)

    first_503 = next(at for at, status, _ in seen if status == 503)
    print(
        f"SIGTERM: /readyz 503 after {first_503 * 1000:.0f} ms; {sent_after} requests "
        f"served, {len(hammer.failures)} failed; {hammer.closes_after_signal} keep-alive "
        f"answers said Connection: close; exit {code} after {exited:.2f} s"
    )
    # 503 "draining" at once, and from then on on every worker (no 200 from another one).
    assert first_503 < 0.15, seen[:5]
    assert all(
        status == 503 and phase == "draining" for at, status, phase in seen if at >= first_503
    ), seen
    # Nothing failed, before or during the delay, on fresh or keep-alive connections.
    assert not hammer.failures, hammer.failures[:10]
    assert hammer.closes_after_signal > 0  # keep-alive clients were told to move
    # The listener kept accepting for the whole delay, then the process exited cleanly.
    assert code == 0, gw.process.tail()
    assert DRAIN_DELAY <= exited < DRAIN_DELAY + 5, exited
    assert "Traceback" not in gw.process.output(), gw.process.tail()


async def test_a_second_signal_cuts_the_delay_short(
    own_stores: OwnStores,
    echo_upstream: UpstreamProcess,
    log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    gw = start_gateway(
        lifecycle_config(echo_upstream, drain_delay="60s"),
        log_dir,
        gateway_env(own_stores),
        name="gw-impatient",
        workers=2,
    )
    try:
        gw.process.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while (await readyz(http, gw))[0] != 503:
            assert time.monotonic() - signalled < 5
            await asyncio.sleep(0.02)
        # Still serving during the delay: the proxy listener accepts.
        _, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
        writer.close()
        await writer.wait_closed()
        gw.process.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(gw.process.proc.wait, 20)
    except BaseException:
        gw.process.kill()
        raise
    exited = time.monotonic() - signalled
    print(f"two SIGTERMs: exit {code} after {exited:.2f} s (drain_delay 60s)")
    assert code == 0, gw.process.tail()
    assert exited < 10
    gw.process.stop(expect_code=0)


def worker_pids(gw: GatewayProcess) -> list[int]:
    """The spawned workers among the parent's children (not multiprocessing's resource
    tracker)."""
    pid = gw.process.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by init, counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_workers_of_a_killed_parent_stop_instead_of_serving_on(
    own_stores: OwnStores,
    echo_upstream: UpstreamProcess,
    log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    """SIGKILL (the OOM killer, a supervisor that kills only the main process) leaves the
    parent no chance to forward a signal: its workers notice the parent is gone, drain
    and exit, instead of serving the shared port unsupervised for ever."""
    gw = start_gateway(
        lifecycle_config(echo_upstream, drain_delay="60s"),
        log_dir,
        gateway_env(own_stores),
        name="gw-orphaned",
        workers=2,
    )
    try:
        workers = worker_pids(gw)
        assert len(workers) == 2, workers
        gw.process.proc.kill()
        killed = time.monotonic()
        await asyncio.to_thread(gw.process.proc.wait, 5)
        while any(alive(pid) for pid in workers):
            # Without the drain delay (60 s here): nothing is left to signal a second time.
            assert time.monotonic() - killed < 15, [alive(pid) for pid in workers]
            await asyncio.sleep(0.05)
        stopped = time.monotonic() - killed
    finally:
        gw.process.kill()
    print(f"parent killed: both workers exited after {stopped:.2f} s (drain_delay 60s)")
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", gw.proxy_port)
    except OSError:
        pass  # refused: no worker listens any more
    else:
        writer.close()
        raise AssertionError("a worker still accepts on the proxy port")
    output = gw.process.output()
    assert output.count("the parent process exited: stopping") == 2, gw.process.tail()


async def test_a_redis_outage_keeps_the_instance_ready(
    own_stores: OwnStores,
    echo_upstream: UpstreamProcess,
    log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    gw = start_gateway(
        lifecycle_config(echo_upstream),
        log_dir,
        gateway_env(own_stores),
        name="gw-redis-out",
        workers=2,
    )
    try:
        async with key_maker(gw.config_path, gw.env) as keys:
            key = await keys.key(["read"])
        async with http.get(gw.url + "/api/read/warm", headers=key.auth) as reply:
            assert reply.status == 200
        own_stores.redis.stop()
        try:
            # Every worker, several times: each reports Redis down, and stays ready.
            answers = []
            for _ in range(10):
                started = time.monotonic()
                status, body = await readyz(http, gw)
                answers.append((status, body, time.monotonic() - started))
            assert all(status == 200 for status, _, _ in answers), answers
            assert all(
                body == {"status": "ready", "stores": {"postgres": "up", "redis": "down"}}
                for _, body, _ in answers
            ), answers
            assert max(took for _, _, took in answers) < 1.5, answers
        finally:
            own_stores.start_redis()
        deadline = time.monotonic() + 10
        while (await readyz(http, gw))[1]["stores"]["redis"] != "up":
            assert time.monotonic() < deadline, "Redis still down on /readyz after restart"
            await asyncio.sleep(0.05)
    except BaseException:
        gw.process.kill()
        raise
    gw.process.stop(expect_code=0)

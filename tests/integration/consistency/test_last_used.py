"""`last_used_at` write-behind (SPEC §5): coalesced per key, at most one write per interval
per worker whatever the request rate, and flushed on SIGTERM.

Writes are counted by a trigger in this package's own database (see conftest), so the
count is what PostgreSQL saw, not what the gateway believes it sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path

import aiohttp

from tests.integration.consistency.conftest import FLUSH_INTERVAL, Launcher, OwnStores, probe
from tests.support.keys import KeyMaker

REQUESTS = 10_000
WORKERS = 2
CONNECTIONS = 64
# The first stamp is due one interval after the first request; a CPU-starved CI machine
# (two gateway workers, wrk and pytest on two cores) may run that flush a little late.
FIRST_STAMP_BOUND = FLUSH_INTERVAL + 2.0

# Each wrk thread stops after its share of the requests and prints the time it did so;
# wrk itself only stops at -d or on SIGINT, which the test sends once both threads are done.
WRK_SCRIPT = """
local limit = tonumber(os.getenv("KEYGATE_TEST_PER_THREAD"))
local count = 0
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEYGATE_TEST_KEY")
function response(status, headers, body)
  count = count + 1
  if count == limit then
    local clock = io.popen("date +%s.%N")
    io.write("THREAD-DONE " .. clock:read("*l") .. "\\n")
    io.stdout:flush()
    clock:close()
    wrk.thread:stop()
  end
end
"""
THREADS = 2


async def load_with_wrk(url: str, secret: str, script: Path) -> tuple[int, int, float]:
    """(requests, non-2xx + socket errors, seconds) for REQUESTS requests through wrk."""
    started = time.time()
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        "-d30s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "KEYGATE_TEST_KEY": secret,
            "KEYGATE_TEST_PER_THREAD": str(REQUESTS // THREADS),
        },
    )
    assert proc.stdout is not None
    finished: list[float] = []
    lines: list[str] = []
    while len(finished) < THREADS:
        line = (await proc.stdout.readline()).decode()
        if not line:
            break
        lines.append(line)
        if line.startswith("THREAD-DONE "):
            finished.append(float(line.split()[1]))
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)  # wrk prints its summary and exits
    rest, err = await proc.communicate()
    out = "".join(lines) + rest.decode()
    assert proc.returncode == 0 and len(finished) == THREADS, out + err.decode()
    found = re.search(r"(\d+) requests in", out)
    assert found, out
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return int(found.group(1)), errors, max(finished) - started


async def load_with_aiohttp(url: str, secret: str) -> tuple[int, int, float]:
    """The same load from this process when wrk is not installed (slower, same checks)."""
    started = time.monotonic()
    remaining = REQUESTS
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            async with session.get(url, headers={"Authorization": f"Bearer {secret}"}) as reply:
                await reply.read()
                errors += reply.status != 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as s:
        await asyncio.gather(*(worker(s) for _ in range(CONNECTIONS)))
    return REQUESTS, errors, time.monotonic() - started


async def last_used(stores: OwnStores, key_id: str) -> datetime | None:
    rows = await stores.fetch("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    value: datetime | None = rows[0]["last_used_at"]
    return value


async def test_ten_thousand_requests_one_stamp_write_per_interval_and_final_stamp_on_sigterm(
    own_stores: OwnStores,
    launch: Launcher,
    keys: KeyMaker,
    http: aiohttp.ClientSession,
    fixed_upstream: str,
    tmp_path: Path,
) -> None:
    gw = launch("gw-stamps", workers=WORKERS, upstreams={"echo": {"url": fixed_upstream}})
    key = await keys.key()
    url = gw.url + "/api/read/stamp"
    script = tmp_path / "stamp.lua"
    script.write_text(WRK_SCRIPT)

    started = time.time()
    load = asyncio.create_task(
        load_with_wrk(url, key.secret, script)
        if shutil.which("wrk")
        else load_with_aiohttp(url, key.secret)
    )
    first_stamp = None
    while not load.done():
        if first_stamp is None and await last_used(own_stores, key.id) is not None:
            first_stamp = time.time() - started
        await asyncio.sleep(0.05)
    sent, errors, seconds = await load
    # A short load on a starved machine can end before the first flush: keep looking
    # until the bound has passed, so a late stamp fails the bound below with its figure.
    while first_stamp is None and time.time() - started < FIRST_STAMP_BOUND + 1.0:
        if await last_used(own_stores, key.id) is not None:
            first_stamp = time.time() - started
        await asyncio.sleep(0.05)

    # The last requests, then SIGTERM at once: their stamp can only come from the flush
    # at shutdown (the periodic one is up to an interval away).
    final_request = time.time()
    finals = await asyncio.gather(*(probe(http, gw.url, key.secret) for _ in range(8)))
    assert {p.status for p in finals} == {200}
    gw.process.proc.send_signal(signal.SIGTERM)
    terminated = time.time()
    await asyncio.to_thread(gw.process.proc.wait, 20)
    gw.process.stop(expect_code=0)

    rows = await own_stores.fetch(
        "SELECT extract(epoch FROM written_at)::float8 AS at FROM test_stamp_writes"
        " WHERE key_id = $1 ORDER BY written_at",
        key.id,
    )
    writes = [r["at"] for r in rows]
    periodic = [w for w in writes if w < terminated]
    stamp = await last_used(own_stores, key.id)
    print(
        f"{sent} requests in {seconds:.2f} s ({sent / seconds:.0f}/s, {errors} errors) over "
        f"{CONNECTIONS} connections, {WORKERS} workers; first stamp visible after "
        f"{(first_stamp or math.nan) * 1000:.0f} ms; PostgreSQL saw {len(writes)} stamp writes "
        f"for the key ({len(periodic)} periodic, {len(writes) - len(periodic)} at shutdown)"
    )

    assert sent >= REQUESTS and errors == 0
    assert first_stamp is not None and first_stamp <= FIRST_STAMP_BOUND, gw.process.tail()
    # Each worker writes at most once per interval: no window shorter than the interval
    # holds more writes than there are workers.
    window = FLUSH_INTERVAL * 0.9
    for i, at in enumerate(periodic):
        assert len([w for w in periodic[i:] if w < at + window]) <= WORKERS, periodic
    elapsed = terminated - started
    assert len(periodic) <= WORKERS * (math.ceil(elapsed / FLUSH_INTERVAL) + 1), periodic
    assert len(writes) - len(periodic) <= WORKERS
    # Nothing lost on SIGTERM: the stamp covers the requests made just before it.
    assert stamp is not None and stamp.timestamp() >= final_request

    shown = await keys.cli("keys", "show", key.id, "--json")
    assert shown.code == 0, shown.err
    shown_at = datetime.fromisoformat(json.loads(shown.out)["last_used_at"].replace("Z", "+00:00"))
    assert abs((shown_at - stamp).total_seconds()) < 1.0

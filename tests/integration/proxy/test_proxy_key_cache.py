"""Keys at speed (§5) seen from outside: changes beat the caches, floods do not starve.

The gateway's local TTL is 1 s here; with Redis up, pub/sub makes changes visible much
sooner. Times are printed for the record; assertions are on the spec's bound.
"""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.keys.format import BASE62, base62_checksum
from tests.integration.proxy.harness import LOCAL_TTL
from tests.support.gateway_process import GatewayProcess
from tests.support.keys import ACTOR, KeyMaker, MadeKey

SLACK = 0.5  # scheduling and polling on a loaded 2-core machine


async def _status(
    http: aiohttp.ClientSession, gateway: GatewayProcess, key: MadeKey, secret: str | None = None
) -> tuple[int, str | None]:
    headers = {"Authorization": f"Bearer {secret or key.secret}"}
    async with http.get(gateway.url + "/api/read/poll", headers=headers) as reply:
        body = await reply.json()
        code = body["error"]["code"] if reply.status != 200 else None
        return reply.status, code


async def _poll_until_refused(
    http: aiohttp.ClientSession, gateway: GatewayProcess, key: MadeKey, limit: float
) -> tuple[float, str | None]:
    """Seconds until the key is refused (polling every 20 ms) and the refusal's code."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        status, code = await _status(http, gateway, key)
        if status != 200:
            return time.monotonic() - started, code
        await asyncio.sleep(0.02)
    raise AssertionError(f"key still accepted {limit:.1f}s later")


async def test_near_misses_of_a_cached_key_are_refused(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    # A key accepted once is recognised by its whole string afterwards; anything that is
    # not exactly that string must still go through (and fail) the full checks.
    key = await keys.key(["read"])
    for _ in range(3):
        assert await _status(http, gateway, key) == (200, None)
    body = key.secret[len("kg_live_") :]
    as_test = "kg_test_" + body[:-6] + base62_checksum("kg_test_" + body[:-6])
    near_misses = {
        "bad checksum": key.secret[:-1] + ("x" if key.secret[-1] != "x" else "y"),
        "other secret, valid checksum": key.with_secret("".join(random.choices(BASE62, k=32))),
        "same id and secret, other env's prefix": as_test,
        "one character longer": "k" + key.secret,
        "id only": key.display_prefix,
    }
    for label, presented in near_misses.items():
        assert await _status(http, gateway, key, presented) == (401, "invalid_api_key"), label
    assert await _status(http, gateway, key) == (200, None)


async def test_revoked_while_cached_is_refused_within_the_local_ttl(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    for _ in range(5):  # warm every tier: local, Redis with its verifier
        assert (await _status(http, gateway, key))[0] == 200
    await keys.cli_ok("keys", "revoke", key.id)
    elapsed, code = await _poll_until_refused(http, gateway, key, LOCAL_TTL + 3)
    print(f"revoked key refused {elapsed * 1000:.0f} ms after `keygate keys revoke` returned")
    assert code == "revoked_api_key"
    assert elapsed <= LOCAL_TTL + SLACK
    # And it stays refused once every cache has had time to expire.
    await asyncio.sleep(LOCAL_TTL + 0.2)
    assert await _status(http, gateway, key) == (401, "revoked_api_key")


async def test_scope_change_while_cached_applies_within_the_local_ttl(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    assert (await _status(http, gateway, key))[0] == 200
    await keys.service.update_key(ACTOR, key.id, scopes=["write"])
    elapsed, code = await _poll_until_refused(http, gateway, key, LOCAL_TTL + 3)
    print(f"scope removal applied {elapsed * 1000:.0f} ms after the update")
    assert code == "insufficient_scope"
    assert elapsed <= LOCAL_TTL + SLACK


async def test_expired_while_cached_is_refused_on_time(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"], expires_in=2.0)
    assert key.expires_at is not None
    expires = key.expires_at.timestamp()
    accepted_after_expiry: list[float] = []
    refused_at = None
    while time.time() < expires + LOCAL_TTL + 2:
        sent = time.time()
        status, code = await _status(http, gateway, key)
        if status == 200:
            if sent > expires:
                accepted_after_expiry.append(sent - expires)
        else:
            assert code == "expired_api_key"
            assert sent > expires - 0.05, "refused before its expiry"
            refused_at = sent
            break
        await asyncio.sleep(0.02)
    assert refused_at is not None, "the expired key was never refused"
    print(f"expired key refused {(refused_at - expires) * 1000:.0f} ms after expires_at")
    # Expiry is checked on every request against the clock: no cache may extend it.
    assert refused_at - expires <= LOCAL_TTL + SLACK
    assert not accepted_after_expiry or max(accepted_after_expiry) < 0.1


def _wrong_secret() -> str:
    return "".join(random.choice(BASE62) for _ in range(32))


async def _flood(
    gateway: GatewayProcess,
    key: MadeKey,
    valid: int,
    wrong: int,
    concurrency: int = 40,
    attacker: str | None = None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Interleave `valid` and `wrong` requests for `key`'s id; count statuses of each.

    With `attacker`, the wrong ones come from that loopback source address.
    """
    jobs = [True] * valid + [False] * wrong
    random.shuffle(jobs)
    valid_counts: dict[int, int] = {}
    wrong_counts: dict[int, int] = {}
    queue: asyncio.Queue[bool] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker(http: aiohttp.ClientSession, bad: aiohttp.ClientSession) -> None:
        while not queue.empty():
            is_valid = queue.get_nowait()
            secret = key.secret if is_valid else key.with_secret(_wrong_secret())
            session = http if is_valid else bad
            async with session.get(
                gateway.url + "/api/read/flood", headers={"Authorization": f"Bearer {secret}"}
            ) as reply:
                await reply.read()
                counts = valid_counts if is_valid else wrong_counts
                counts[reply.status] = counts.get(reply.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    bad_connector = aiohttp.TCPConnector(
        limit=concurrency, local_addr=(attacker, 0) if attacker else None
    )
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        aiohttp.ClientSession(connector=bad_connector) as bad,
    ):
        await asyncio.gather(*(worker(http, bad) for _ in range(concurrency)))
    return valid_counts, wrong_counts


async def test_wrong_secret_flood_does_not_starve_valid_traffic(
    gateway: GatewayProcess, http: aiohttp.ClientSession, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    assert (await _status(http, gateway, key))[0] == 200  # valid traffic is flowing
    valid, wrong = await _flood(gateway, key, valid=300, wrong=1500)
    print(f"flood: valid {valid}, wrong {wrong}")
    assert valid == {200: 300}
    assert wrong == {401: 1500}
    # The key works normally afterwards.
    assert (await _status(http, gateway, key))[0] == 200


async def test_wrong_secrets_racing_the_first_verify_do_not_unlearn_it(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    """Wrong secrets verified alongside the first right one must not erase what it proved.

    1. the right secret and a burst of wrong ones (under the per-id failure limit) at once;
    2. more wrong ones: refused by the cached verifier, they must not reach argon2, so
       they cannot push the id over the failure limit;
    3. the right secret keeps working.
    """
    key = await keys.key(["read"])
    under_limit = 15  # cache.max_failures_per_key defaults to 20

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def wrong() -> tuple[int, str | None]:
            return await _status(http, gateway, key, key.with_secret(_wrong_secret()))

        results = await asyncio.gather(
            _status(http, gateway, key), *(wrong() for _ in range(under_limit))
        )
        assert results[0] == (200, None)
        assert set(results[1:]) == {(401, "invalid_api_key")}
        later_wrong = await asyncio.gather(*(wrong() for _ in range(under_limit)))
        assert set(later_wrong) == {(401, "invalid_api_key")}
        after = await asyncio.gather(*(_status(http, gateway, key) for _ in range(30)))
    refused = [r for r in after if r[0] != 200]
    assert not refused, f"{len(refused)} of 30 valid requests refused: {refused[0]}"


async def test_wrong_secret_flood_before_first_use(gateway: GatewayProcess, keys: KeyMaker) -> None:
    """A flood that starts before the key's first use (nothing cached anywhere).

    The attacker (127.0.0.2) exhausts its own wrong-secret budget for the key id and is
    then answered 429 without argon2 (never 401); the key's real user (127.0.0.1) is
    still verified, so the flood cannot lock the key out.
    """
    key = await keys.key(["read"])
    _, wrong = await _flood(gateway, key, valid=0, wrong=100, attacker="127.0.0.2")
    # Only verifies that ran are 401 (at most the budget); the rest are refused without
    # argon2: 429 over the limit, or 503 while the org's verify queue is full.
    assert set(wrong) <= {401, 429, 503}, wrong
    assert 0 < wrong.get(401, 0) <= MAX_FAILURES and wrong.get(429, 0) > 0
    assert sum(wrong.values()) == 100
    valid, wrong = await _flood(gateway, key, valid=50, wrong=100, attacker="127.0.0.2")
    print(f"cold flood: valid {valid}, wrong {wrong}")
    # Still throttled, or (once the owner's secret is known) refused by the keyed hash.
    assert set(wrong) <= {401, 429}
    assert valid == {200: 50}


# --- the wrong-secret limit (§3 step 7), counted on the gateway's own metrics ------------

MAX_FAILURES = 20  # cache.max_failures_per_key's default: the harness does not set it


async def _verifications(gateway: GatewayProcess) -> float:
    """argon2 verifies run so far (keygate_key_verifications_total, valid + invalid)."""
    async with aiohttp.ClientSession() as http, http.get(gateway.admin_url + "/metrics") as reply:
        text = await reply.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "keygate_key_verifications":
            total += sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("result") in ("valid", "invalid")
            )
    return total


async def _settled_verifications(gateway: GatewayProcess) -> float:
    """The count once it stops moving (verifies of gone clients finish in the background)."""
    last = await _verifications(gateway)
    for _ in range(100):
        await asyncio.sleep(0.3)
        now = await _verifications(gateway)
        if now == last:
            break
        last = now
    return last


async def test_two_hundred_concurrent_wrong_secrets_cost_at_most_the_limit_of_verifies(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    before = await _settled_verifications(gateway)
    codes: dict[tuple[int, str | None], int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def wrong() -> None:
            secret = key.with_secret(_wrong_secret())
            async with http.get(
                gateway.url + "/api/read/flood", headers={"Authorization": f"Bearer {secret}"}
            ) as reply:
                body = await reply.json()
                if reply.status == 429:
                    assert int(reply.headers["Retry-After"]) >= 1
                found = (reply.status, body["error"]["code"])
                codes[found] = codes.get(found, 0) + 1

        await asyncio.gather(*(wrong() for _ in range(200)))
    ran = await _settled_verifications(gateway) - before
    print(f"200 concurrent wrong secrets: {codes}; argon2 verifies: {ran:g}")
    assert ran <= MAX_FAILURES
    assert codes == {(401, "invalid_api_key"): ran, (429, "too_many_attempts"): 200 - ran}
    # The owner, from the same address, after the window: not before (it is the same
    # client), so from another loopback address now.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.5", 0))) as owner,
        owner.get(gateway.url + "/api/read/x", headers=key.auth) as reply,
    ):
        assert reply.status == 200


async def test_clients_that_leave_mid_verify_are_still_counted(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    """Each attempt is counted when it starts: closing the socket while the gateway
    verifies does not give the attempt back. Over the disconnecting burst and the polite
    attempts after it, the key id costs exactly the limit's worth of argon2, no more."""
    key = await keys.key(["read"])
    before = await _settled_verifications(gateway)

    async def leave_mid_verify() -> None:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.proxy_port, local_addr=("127.0.0.3", 0)
        )
        secret = key.with_secret(_wrong_secret())
        writer.write(
            f"GET /api/read/x HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {secret}\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(0.005)  # long enough to be read, too short to be answered
        writer.transport.abort()  # gone, without waiting for the answer

    await asyncio.gather(*(leave_mid_verify() for _ in range(60)))
    by_leavers = await _settled_verifications(gateway) - before
    statuses: list[int] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
    ) as http:
        for _ in range(MAX_FAILURES + 5):
            secret = key.with_secret(_wrong_secret())
            async with http.get(
                gateway.url + "/api/read/x", headers={"Authorization": f"Bearer {secret}"}
            ) as reply:
                statuses.append(reply.status)
    total = await _settled_verifications(gateway) - before
    print(f"verifies for clients that left: {by_leavers:g}; after them: {statuses}")
    assert total == MAX_FAILURES
    assert statuses.count(401) == MAX_FAILURES - by_leavers
    assert statuses[-5:] == [429] * 5


async def test_one_address_burst_never_reaches_the_per_id_cap(
    gateway: GatewayProcess, keys: KeyMaker
) -> None:
    key = await keys.key(["read"])
    before = await _settled_verifications(gateway)
    _, wrong = await _flood(gateway, key, valid=0, wrong=600, attacker="127.0.0.4")
    ran = await _settled_verifications(gateway) - before
    assert ran <= MAX_FAILURES < MAX_FAILURES * 10  # the per-id cap is 10x the per-client
    # Only the verifies that ran are 401; the rest are refused without argon2: 429 over the
    # limit, or 503 while the org's verify queue is full (timing decides which).
    assert set(wrong) <= {401, 429, 503}, wrong
    assert wrong.get(401, 0) == ran
    assert wrong.get(429, 0) + wrong.get(503, 0) == 600 - ran and wrong.get(429, 0) > 0
    # The owner's correct key, first used now from another address: verified, 200.
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url + "/api/read/x", headers=key.auth) as reply,
    ):
        assert reply.status == 200

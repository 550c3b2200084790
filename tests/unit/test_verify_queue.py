"""The argon2 queue: fair between orgs, bounded, and a thread is busy until it finishes.

Real argon2 on real threads; assertions count verifies, never time them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from gateway.auth.verify_queue import FairVerifier, VerifyQueueFull
from gateway.config import Argon2Params
from gateway.keys.hashing import SecretHasher

PARAMS = Argon2Params(time_cost=1, memory_kib=8192, parallelism=1)
SLOTS = 2


@pytest.fixture
def hasher() -> Iterator[SecretHasher]:
    h = SecretHasher(PARAMS, threads=SLOTS)
    yield h
    h.close()


@pytest.fixture
def encoded(hasher: SecretHasher) -> str:
    return hasher.hash("the-right-secret")


async def test_another_orgs_first_verify_waits_for_at_most_two_rounds_of_threads(
    hasher: SecretHasher, encoded: str
) -> None:
    started: list[str] = []
    verifier = FairVerifier(
        hasher, SLOTS, max_queued_per_org=16, max_queued=128, on_start=started.append
    )
    flood = [
        asyncio.create_task(verifier.verify("org-a", encoded, f"wrong-{i}"))
        for i in range(16 + SLOTS)
    ]
    await asyncio.sleep(0)
    assert verifier.running == SLOTS and verifier.queued == 16
    before_b = len(started)
    first_b = asyncio.create_task(verifier.verify("org-b", encoded, "the-right-secret"))
    assert await first_b is True
    ahead = started.index("org-b") - before_b
    print(f"org-b's first verify started after {ahead} more of org-a's")
    assert ahead <= 2 * SLOTS
    assert not any(await asyncio.gather(*flood))
    assert started.count("org-a") == 16 + SLOTS  # the flood itself still ran, in turn


async def test_turns_alternate_between_waiting_orgs(hasher: SecretHasher, encoded: str) -> None:
    started: list[str] = []
    verifier = FairVerifier(
        hasher, 1, max_queued_per_org=16, max_queued=128, on_start=started.append
    )
    jobs = [asyncio.create_task(verifier.verify("a", encoded, "x")) for _ in range(6)]
    jobs += [asyncio.create_task(verifier.verify("b", encoded, "x")) for _ in range(3)]
    jobs += [asyncio.create_task(verifier.verify("c", encoded, "x")) for _ in range(2)]
    await asyncio.gather(*jobs)
    assert started == ["a", "a", "b", "c", "a", "b", "c", "a", "b", "a", "a"]


@pytest.mark.parametrize(
    ("per_org", "total", "orgs", "accepted"),
    [
        (16, 128, ["a"] * 20, 16 + SLOTS),  # one org: its own bound (plus running)
        (16, 20, ["a"] * 10 + ["b"] * 10 + ["c"] * 10, 20 + SLOTS),  # all orgs: the total
        (4, 128, ["a"] * 10 + ["b"] * 10, 4 + 4 + SLOTS),
    ],
)
async def test_queues_are_bounded_beyond_them_503(
    hasher: SecretHasher,
    encoded: str,
    per_org: int,
    total: int,
    orgs: list[str],
    accepted: int,
) -> None:
    verifier = FairVerifier(hasher, SLOTS, max_queued_per_org=per_org, max_queued=total)
    jobs = [asyncio.create_task(verifier.verify(org, encoded, "x")) for org in orgs]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    refused = [r for r in results if isinstance(r, VerifyQueueFull)]
    assert len(results) - len(refused) == accepted
    assert refused and refused[0].status == 503 and refused[0].code == "auth_unavailable"
    assert "Retry-After" in refused[0].headers()


async def test_a_cancelled_waiter_frees_its_slot_only_when_the_thread_finishes(
    hasher: SecretHasher, encoded: str
) -> None:
    verifier = FairVerifier(hasher, 1, max_queued_per_org=16, max_queued=128)
    running = asyncio.create_task(verifier.verify("a", encoded, "x"))
    queued = asyncio.create_task(verifier.verify("a", encoded, "y"))
    await asyncio.sleep(0)
    assert verifier.running == 1 and verifier.queued == 1
    running.cancel()
    queued.cancel()
    for task in (running, queued):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert verifier.running == 1  # the thread is still verifying: its slot stays taken
    for _ in range(2000):
        if not verifier.running:
            break
        await asyncio.sleep(0.005)
    assert verifier.queued == 0  # the cancelled waiter's verify never took a thread
    assert await verifier.verify("a", encoded, "the-right-secret") is True

"""Secret hashing: argon2id at rest, and the keyed fast hash used after one verify.

argon2 calls hold `memory_kib` of RAM each and cost ~20 ms of CPU, so they run on a small
dedicated thread pool (argon2-cffi releases the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.config import Argon2Params


class SecretHasher:
    """argon2id hashing with configured parameters, verified on a bounded thread pool."""

    def __init__(self, params: Argon2Params, threads: int = 2) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")

    def hash(self, secret: str) -> str:
        """The encoded argon2id hash (blocking; ~20 ms at default parameters)."""
        return self._hasher.hash(secret)

    async def hash_async(self, secret: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.hash, secret)

    def verify(self, encoded: str, secret: str) -> bool:
        """True when `secret` matches `encoded` (blocking; safe to call from any thread)."""
        try:
            return self._hasher.verify(encoded, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify_async(self, encoded: str, secret: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.verify, encoded, secret)

    def needs_rehash(self, encoded: str) -> bool:
        return self._hasher.check_needs_rehash(encoded)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def fast_verifier(server_secret: bytes, key_id: str, secret: str) -> bytes:
    """HMAC-SHA-256 of the key under the server secret.

    Shared through Redis after one argon2 verify; without `server_secret` it confirms
    nothing about a guessed key.
    """
    return hmac.digest(server_secret, f"{key_id}:{secret}".encode(), "sha256")


def same_verifier(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)

"""Secret hashing: argon2id at rest, and the keyed fast hash used after one verify.

argon2 calls hold `memory_kib` of RAM each and cost ~20 ms of CPU, so they run on a small
dedicated thread pool (argon2-cffi releases the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from concurrent.futures import Future, ThreadPoolExecutor

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

    def submit_verify(self, encoded: str, secret: str) -> Future[bool]:
        """Start a verify on the pool; the future completes when its thread is done with
        it (whatever happens to whoever awaits it), which is what frees a slot."""
        return self._pool.submit(self.verify, encoded, secret)

    def needs_rehash(self, encoded: str) -> bool:
        """Whether `encoded` was made with other parameters than the configured ones."""
        try:
            return self._hasher.check_needs_rehash(encoded)
        except InvalidHashError:
            return False  # not ours to repair: it never verifies anyway

    def rehash(self, encoded: str, secret: str) -> str | None:
        """`secret` hashed with the configured parameters when `encoded` (which it just
        verified against) was made with others; None when it is current (blocking)."""
        return self.hash(secret) if self.needs_rehash(encoded) else None

    async def rehash_async(self, encoded: str, secret: str) -> str | None:
        """`rehash` on the pool: hashing costs what a verify does."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.rehash, encoded, secret)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def verifier_key(server_secret: bytes) -> bytes:
    """The key of `fast_verifier`, derived once from the server secret (of any length)."""
    return hashlib.blake2b(server_secret, digest_size=64, person=b"keygate-verify").digest()


def fast_verifier(key: bytes, key_id: str, secret: str) -> bytes:
    """BLAKE2b in its keyed (MAC) mode, RFC 7693, over `id:secret`; `key` from verifier_key.

    Shared through Redis after one argon2 verify; without the server secret it confirms
    nothing about a guessed key. (Chosen over HMAC-SHA-256 for speed: one C call with no
    OpenSSL algorithm lookup, about half the time per request.)
    """
    return hashlib.blake2b(f"{key_id}:{secret}".encode(), key=key, digest_size=32).digest()


# Constant-time comparison of two verifiers (the C function itself: no wrapper frame).
same_verifier = hmac.compare_digest


class TokenProofs:
    """Keyed BLAKE2b of a whole presented key, under a random key of this process only.

    A process remembers the proof of each key it has checked whole (format, checksum, env,
    prefix, secret), so a later request with the same string is recognised by one keyed hash
    and one constant-time comparison, without parsing it again. The key never leaves the
    process, so a proof is worthless anywhere else (and nothing else needs to read one).
    """

    __slots__ = ("_base",)

    def __init__(self) -> None:
        # Keyed once: each proof copies the keyed state instead of re-keying (half the time).
        self._base = hashlib.blake2b(
            key=secrets.token_bytes(32), digest_size=16, person=b"keygate-proof"
        )

    def of(self, presented: str) -> bytes:
        mac = self._base.copy()
        mac.update(presented.encode())
        return mac.digest()

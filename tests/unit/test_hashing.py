"""Tests for gateway.keys.hashing: argon2id at rest and the keyed fast verifier."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from gateway.config import Argon2Params
from gateway.keys.format import generate_key
from gateway.keys.hashing import (
    SecretHasher,
    TokenProofs,
    fast_verifier,
    same_verifier,
    verifier_key,
)

CHEAP = Argon2Params(time_cost=1, memory_kib=1024, parallelism=1)


@pytest.fixture
def hasher() -> Iterator[SecretHasher]:
    h = SecretHasher(CHEAP, threads=2)
    yield h
    h.close()


def test_default_parameters_are_the_spec_ones() -> None:
    """The only test at the default cost (~20 ms a hash)."""
    hasher = SecretHasher(Argon2Params())
    try:
        _, parts = generate_key("kg_live_")
        encoded = hasher.hash(parts.secret)
        assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert hasher.verify(encoded, parts.secret)
        assert not hasher.verify(
            encoded, parts.secret[:-1] + ("A" if parts.secret[-1] != "A" else "B")
        )
        assert not hasher.needs_rehash(encoded)
    finally:
        hasher.close()


def test_hash_and_verify(hasher: SecretHasher) -> None:
    _, parts = generate_key("kg_live_")
    encoded = hasher.hash(parts.secret)
    assert encoded.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert parts.secret not in encoded
    assert hasher.verify(encoded, parts.secret)
    assert not hasher.verify(encoded, "")
    assert not hasher.verify(
        encoded, "0" + parts.secret[1:] if parts.secret[0] != "0" else "1" + parts.secret[1:]
    )
    # Salted: the same secret never hashes the same way twice.
    assert hasher.hash(parts.secret) != encoded


@pytest.mark.parametrize("encoded", ["", "plaintext", "$argon2id$garbage", "$2b$12$bcrypt"])
def test_verify_of_a_broken_hash_is_false_not_an_error(hasher: SecretHasher, encoded: str) -> None:
    assert hasher.verify(encoded, "secret") is False


def test_needs_rehash_when_parameters_change(hasher: SecretHasher) -> None:
    stronger = SecretHasher(Argon2Params(time_cost=2, memory_kib=2048, parallelism=1))
    try:
        encoded = hasher.hash("s")
        assert stronger.needs_rehash(encoded)
        assert not hasher.needs_rehash(encoded)
        assert stronger.verify(encoded, "s")  # old hashes still verify
    finally:
        stronger.close()


async def test_rehash_only_an_outdated_hash(hasher: SecretHasher) -> None:
    stronger = SecretHasher(Argon2Params(time_cost=2, memory_kib=2048, parallelism=1))
    try:
        old = hasher.hash("s")
        assert await hasher.rehash_async(old, "s") is None  # current: nothing to do
        new = await stronger.rehash_async(old, "s")
        assert new is not None and "$m=2048,t=2,p=1$" in new
        assert stronger.verify(new, "s") and not stronger.needs_rehash(new)
    finally:
        stronger.close()


@pytest.mark.parametrize("encoded", ["", "plaintext", "$argon2id$garbage"])
def test_a_broken_hash_never_needs_rehash(hasher: SecretHasher, encoded: str) -> None:
    assert hasher.needs_rehash(encoded) is False


async def test_async_calls_run_off_the_event_loop(hasher: SecretHasher) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = hasher.verify

    def spy(encoded: str, secret: str) -> bool:
        seen.append(threading.get_ident())
        return original(encoded, secret)

    hasher.verify = spy  # type: ignore[method-assign]
    encoded = await hasher.hash_async("secret")
    results = await asyncio.gather(
        *(hasher.verify_async(encoded, s) for s in ("secret", "nope") * 4)
    )
    assert results == [True, False] * 4
    assert seen and loop_thread not in seen


def test_fast_verifier_is_keyed() -> None:
    a = fast_verifier(b"k" * 32, "a1B2c3D4", "secret")
    assert len(a) == 32
    assert same_verifier(a, fast_verifier(b"k" * 32, "a1B2c3D4", "secret"))
    assert not same_verifier(a, fast_verifier(b"K" * 32, "a1B2c3D4", "secret"))
    assert not same_verifier(a, fast_verifier(b"k" * 32, "a1B2c3D5", "secret"))
    assert not same_verifier(a, fast_verifier(b"k" * 32, "a1B2c3D4", "secreT"))
    assert b"secret" not in a


def test_verifier_key_takes_any_secret_length_and_depends_on_all_of_it() -> None:
    long_a, long_b = b"x" * 100 + b"a", b"x" * 100 + b"b"  # differ past BLAKE2b's 64-byte key
    assert len(verifier_key(long_a)) == 64
    assert verifier_key(long_a) != verifier_key(long_b)
    a = fast_verifier(verifier_key(long_a), "a1B2c3D4", "secret")
    assert not same_verifier(a, fast_verifier(verifier_key(long_b), "a1B2c3D4", "secret"))


def test_token_proofs_tell_strings_apart_and_are_keyed_per_process() -> None:
    proofs, other = TokenProofs(), TokenProofs()
    key = "kg_live_" + "a1B2c3D4" + "s" * 32 + "abcdef"
    assert proofs.of(key) == proofs.of(key)
    assert len(proofs.of(key)) == 16
    assert proofs.of(key) != proofs.of(key[:-1] + "g")
    assert proofs.of(key) != proofs.of("kg_test_" + key[8:])
    assert proofs.of(key) != other.of(key)  # a random key each: worthless elsewhere

"""The in-process tier of the key cache: bounded (LRU) and short-lived (TTL)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from hmac import compare_digest

from gateway.store.key_cache import KeyState


@dataclass(frozen=True)
class LocalEntry:
    """`state` None: the id is unknown. `verifier` None: the right secret not seen yet,
    so `secret_hash` is kept to verify candidates without another database read."""

    state: KeyState | None
    verifier: bytes | None
    secret_hash: str | None
    expires: float


class LocalKeyCache:
    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, LocalEntry] = OrderedDict()
        # Verifiers outlive entries: a key's secret never changes, so a verifier stays a
        # valid proof after its entry's state went stale. Refreshing the state from
        # Postgres then costs no argon2 verify (which matters while Redis is down).
        self._verifiers: OrderedDict[str, bytes] = OrderedDict()
        # Proofs (TokenProofs) of whole keys this process has checked, by key id: like
        # verifiers they outlive entries, since a key's full string never changes.
        self._proofs: dict[str, bytes] = {}

    def get(self, key_id: str) -> LocalEntry | None:
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            del self._entries[key_id]
            return None
        self._entries.move_to_end(key_id)
        return entry

    def put(
        self,
        key_id: str,
        state: KeyState | None,
        verifier: bytes | None = None,
        secret_hash: str | None = None,
        ttl: float | None = None,
    ) -> None:
        lifetime = self.ttl if ttl is None else min(ttl, self.ttl)
        self._entries[key_id] = LocalEntry(state, verifier, secret_hash, self.clock() + lifetime)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if verifier is not None:
            self._verifiers[key_id] = verifier
            self._verifiers.move_to_end(key_id)
            while len(self._verifiers) > self.max_entries:
                self._verifiers.popitem(last=False)

    def proven(self, key_id: str, proof: bytes) -> KeyState | None:
        """The live state of `key_id` if `proof` is that of its whole key, else None.

        `get` and the proof check in one call: this runs on every request with a key.
        """
        known = self._proofs.get(key_id)
        if known is None or not compare_digest(known, proof):
            return None
        entry = self._entries.get(key_id)
        if entry is None or entry.state is None:
            return None
        if entry.expires <= self.clock():
            del self._entries[key_id]
            return None
        self._entries.move_to_end(key_id)
        return entry.state

    def put_proof(self, key_id: str, proof: bytes) -> None:
        proofs = self._proofs
        proofs.pop(key_id, None)  # re-inserted last: the oldest proof is dropped first
        proofs[key_id] = proof
        if len(proofs) > self.max_entries:
            del proofs[next(iter(proofs))]

    def known_verifier(self, key_id: str) -> bytes | None:
        """The verifier of `key_id` once seen, even after its entry expired or was evicted."""
        return self._verifiers.get(key_id)

    def evict(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

"""The in-process tier of the key cache: bounded, short-lived (TTL), never older.

No interleaving of awaits may let an older state replace a newer one here. Two guards:

- Versions: a put is refused when the entry there, or the floor an invalidation left for
  the key (`<id>:<version>` said "at least this version from now on"), is newer.
- Tickets: a lookup takes a ticket (a generation number) before it reads Redis or
  Postgres, and its put is refused when the key was invalidated after the ticket was
  taken. That covers what versions cannot: a bare-id invalidation (version unknown), a
  floor dropped from its bounded table (every ticket older than a dropped marker is
  refused), and `clear()` (every ticket older than the clear is refused).

Lifetimes: `ttl` is set by whoever knows whether changes are being heard (key_changes):
long (cache.max_age) while an invalidation channel is live, short otherwise. An entry
read after a jittered 70-90 % of its lifetime calls `on_refresh_due`, so that a key in
steady use is re-read in the background before it expires (no request waits on its
refill), and entries filled together do not all refresh at once.

Bound: second chance (CLOCK), an approximation of LRU. A read only marks its entry used;
when the table is over `max_entries`, the oldest entry goes unless it was used since it
was last looked at, in which case it is unmarked and queued again. A hit then touches one
table and one entry (a true LRU moves the entry on every read, touching its neighbours
too: with 100,000 keys in random use that cost a cache miss each, see tests/perf/README.md,
issue 15), and a key used once is evicted before keys in steady use.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from hmac import compare_digest

from gateway.keys.state import KeyState

Ticket = int


@dataclass(slots=True, eq=False)
class LocalEntry:
    """`state` None: the id is unknown. `verifier` None: the right secret not seen yet,
    so `secret_hash` is kept to verify candidates without another database read.

    Everything a request of a known key reads is here, so that a hit touches one object:
    `proof` is the key's entry in the proofs table (when it has one), and `used` the
    second-chance mark."""

    state: KeyState | None
    verifier: bytes | None
    secret_hash: str | None
    expires: float
    refresh_at: float  # from then on, reads ask for a background refresh (< expires)
    proof: bytes | None = None
    used: bool = False


class LocalKeyCache:
    def __init__(
        self,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        on_refresh_due: Callable[[str], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.on_refresh_due = on_refresh_due
        self._entries: OrderedDict[str, LocalEntry] = OrderedDict()
        # Verifiers outlive entries: a key's secret never changes, so a verifier stays a
        # valid proof after its entry's state went stale. Refreshing the state from
        # Postgres then costs no argon2 verify (which matters while Redis is down).
        self._verifiers: OrderedDict[str, bytes] = OrderedDict()
        # Proofs (TokenProofs) of whole keys this process has checked, by key id: like
        # verifiers they outlive entries, since a key's full string never changes.
        self._proofs: dict[str, bytes] = {}
        # Per key: (generation of its last invalidation, lowest version acceptable since).
        self._marks: OrderedDict[str, tuple[Ticket, int]] = OrderedDict()
        self._generations = itertools.count(1)
        self._generation: Ticket = 0
        # Tickets older than this are refused for every key (a clear, or a dropped mark).
        self._refuse_before: Ticket = 0

    # ------------------------------------------------------------------ reads

    def get(self, key_id: str) -> LocalEntry | None:
        entry = self._entries.get(key_id)
        if entry is None or not self._live(key_id, entry):
            return None
        return entry

    def proven(self, key_id: str, proof: bytes) -> KeyState | None:
        """The live state of `key_id` if `proof` is that of its whole key, else None.

        `get` and the proof check in one call: this runs on every request with a key.
        """
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        known = entry.proof
        if known is None or entry.state is None or not compare_digest(known, proof):
            return None
        if not self._live(key_id, entry):
            return None
        return entry.state

    def _live(self, key_id: str, entry: LocalEntry) -> bool:
        """False (and dropped) once expired; else marked used, and a refresh asked for
        when due. The expiry is read only past the refresh point, which comes first."""
        if entry.refresh_at <= (now := self.clock()):
            if entry.expires <= now:
                del self._entries[key_id]
                return False
            if self.on_refresh_due is not None:
                self.on_refresh_due(key_id)
        entry.used = True
        return True

    def known_verifier(self, key_id: str) -> bytes | None:
        """The verifier of `key_id` once seen, even after its entry expired or was evicted."""
        return self._verifiers.get(key_id)

    def floor(self, key_id: str) -> int:
        """The lowest version of `key_id` that may still be believed (0: no constraint)."""
        mark = self._marks.get(key_id)
        return 0 if mark is None else mark[1]

    # ------------------------------------------------------------------ writes

    def ticket(self) -> Ticket:
        """Take before reading a key from Redis or Postgres; hand it to `put`."""
        return self._generation

    def put(
        self,
        key_id: str,
        state: KeyState | None,
        verifier: bytes | None = None,
        secret_hash: str | None = None,
        *,
        ticket: Ticket,
        ttl: float | None = None,
    ) -> bool:
        """Cache what a lookup that took `ticket` read; False (nothing cached) when it may
        be older than what is known: invalidated since the ticket, or below a version."""
        if verifier is not None:
            self.learn_verifier(key_id, verifier)  # a secret never changes: always valid
        if ticket < self._refuse_before:
            return False
        mark = self._marks.get(key_id)
        if mark is not None and (
            ticket < mark[0] or (state is not None and state.version < mark[1])
        ):
            return False
        current = self._entries.get(key_id)
        if (
            current is not None
            and current.state is not None
            and state is not None
            and current.state.version > state.version
        ):
            return False
        lifetime = self.ttl if ttl is None else min(ttl, self.ttl)
        now = self.clock()
        refresh_at = now + lifetime * random.uniform(0.7, 0.9)  # noqa: S311 - spread, not secret
        entries = self._entries
        # A new key joins the back of the queue unmarked; a refreshed one keeps its place
        # and its mark (it is being refreshed because it is in use).
        entries[key_id] = LocalEntry(
            state,
            verifier,
            secret_hash,
            now + lifetime,
            refresh_at,
            proof=self._proofs.get(key_id),
            used=current is not None and current.used,
        )
        while len(entries) > self.max_entries:
            oldest, entry = entries.popitem(last=False)
            if entry.used:  # used since last looked at: a second chance, at the back
                entry.used = False
                entries[oldest] = entry
        return True

    def learn_verifier(self, key_id: str, verifier: bytes) -> None:
        self._verifiers[key_id] = verifier
        self._verifiers.move_to_end(key_id)
        while len(self._verifiers) > self.max_entries:
            self._verifiers.popitem(last=False)

    def put_proof(self, key_id: str, proof: bytes) -> None:
        proofs = self._proofs
        proofs.pop(key_id, None)  # re-inserted last: the oldest proof is dropped first
        proofs[key_id] = proof
        entry = self._entries.get(key_id)
        if entry is not None:
            entry.proof = proof
        if len(proofs) > self.max_entries:
            dropped = next(iter(proofs))
            del proofs[dropped]
            entry = self._entries.get(dropped)
            if entry is not None:  # the table decides: its entry's copy goes too
                entry.proof = None

    def invalidate(self, key_id: str, version: int | None) -> None:
        """`key_id` changed (to `version`, when known): evict it, and refuse from now on
        any put from a lookup begun before, and any state older than `version`.

        An entry already at `version` or newer is kept: it is that change's state (a
        channel's re-sync after a reconnect announces every recent change again, and
        evicting the entries that already hold them would send each to Redis anew)."""
        self._generation = generation = next(self._generations)
        mark = self._marks.pop(key_id, None)
        floor = max(mark[1] if mark else 0, version or 0)
        self._marks[key_id] = (generation, floor)
        while len(self._marks) > self.max_entries:
            _, (dropped, _) = self._marks.popitem(last=False)
            # Its lookups in flight must still be refused: refuse every older ticket.
            self._refuse_before = max(self._refuse_before, dropped)
        entry = self._entries.get(key_id)
        if entry is not None and (
            version is None or entry.state is None or entry.state.version < version
        ):
            del self._entries[key_id]

    def evict(self, key_id: str) -> None:
        """Drop the entry (a refresh is due) without refusing anything."""
        self._entries.pop(key_id, None)

    def clear(self) -> None:
        """Drop every entry, and refuse every put from a lookup begun before."""
        self._generation = next(self._generations)
        self._refuse_before = self._generation
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key_id: object) -> bool:
        """An entry (live or expired) is held for `key_id`; no LRU move, no refresh."""
        return key_id in self._entries

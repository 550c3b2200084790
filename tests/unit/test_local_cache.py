from gateway.auth.local_cache import LocalKeyCache
from gateway.store.key_cache import KeyState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(key_id: str) -> KeyState:
    return KeyState(key_id, "acme", "kg_live_", "live", ("read",), None, False, 1)


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=clock)
    cache.put("a", state("a"), b"v")
    clock.now += 4.9
    assert cache.get("a") is not None
    clock.now += 0.2
    assert cache.get("a") is None


def test_a_shorter_ttl_applies_to_new_entries() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=clock)
    cache.ttl = 1.0  # the invalidation channel is down
    cache.put("a", state("a"), b"v")
    clock.now += 1.1
    assert cache.get("a") is None


def test_verifiers_outlive_expired_and_evicted_entries() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=10, clock=clock)
    cache.put("a", state("a"), b"proof")
    cache.evict("a")
    assert cache.get("a") is None
    assert cache.known_verifier("a") == b"proof"
    clock.now += 60
    assert cache.known_verifier("a") == b"proof"
    assert cache.known_verifier("b") is None


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = LocalKeyCache(ttl=5, max_entries=3, clock=Clock())
    for key_id in "abc":
        cache.put(key_id, state(key_id), key_id.encode())
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", state("d"), b"d")
    assert len(cache) == 3
    assert cache.get("b") is None
    assert cache.get("a") is not None
    cache.put("e", state("e"), b"e")
    assert cache.known_verifier("b") is None  # verifiers are bounded too


def test_proofs_outlive_entries_and_are_bounded_oldest_first() -> None:
    clock = Clock()
    cache = LocalKeyCache(ttl=5, max_entries=2, clock=clock)
    cache.put("a", state("a"), b"v")
    cache.put_proof("a", b"pa")
    assert cache.proven("a", b"pa") == state("a")
    assert cache.proven("a", b"pb") is None  # another string with the same id
    cache.evict("a")
    assert cache.proven("a", b"pa") is None  # no state: the full path decides
    cache.put("a", state("a"), b"v")
    assert cache.proven("a", b"pa") == state("a")  # the key's string never changes
    clock.now += 5.1
    assert cache.proven("a", b"pa") is None  # the state's TTL still applies
    for key_id in "abc":
        cache.put(key_id, state(key_id), b"v")
    cache.put_proof("b", b"pb")
    cache.put_proof("a", b"pa")  # re-proven: now the newest
    cache.put_proof("c", b"pc")  # over the bound: b, the oldest proof, goes
    assert cache.proven("b", b"pb") is None
    assert cache.proven("c", b"pc") == state("c")

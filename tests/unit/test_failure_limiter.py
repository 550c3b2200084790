from gateway.auth.failures import FLEET_FACTOR, FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_client_is_cut_off_without_locking_out_others() -> None:
    clock = Clock()
    limiter = FailureLimiter(window=10, max_failures=3, clock=clock)
    for _ in range(3):
        assert not limiter.blocked("id1", "10.0.0.9")
        limiter.record_failure("id1", "10.0.0.9")
    assert limiter.blocked("id1", "10.0.0.9")
    assert not limiter.blocked("id1", "10.0.0.1")  # the key's real user
    assert not limiter.blocked("id2", "10.0.0.9")  # other keys


def test_a_flood_from_many_clients_is_capped_per_key() -> None:
    clock = Clock()
    limiter = FailureLimiter(window=10, max_failures=3, clock=clock)
    for i in range(3 * FLEET_FACTOR):
        limiter.record_failure("id1", f"10.0.{i}.1")
    assert limiter.blocked("id1", "10.9.9.9")
    assert not limiter.blocked("id2", "10.9.9.9")


def test_the_window_ends() -> None:
    clock = Clock()
    limiter = FailureLimiter(window=10, max_failures=1, clock=clock)
    limiter.record_failure("id1", "a")
    assert limiter.blocked("id1", "a")
    clock.now = 10.0
    assert not limiter.blocked("id1", "a")
    limiter.record_failure("id1", "a")
    assert limiter.blocked("id1", "a")


def test_memory_is_bounded() -> None:
    limiter = FailureLimiter(window=10, max_failures=1, max_tracked=100, clock=Clock())
    for i in range(1000):
        limiter.record_failure(f"id{i}", "a")
    assert not limiter.blocked("id0", "a")  # the oldest were forgotten
    assert limiter.blocked("id999", "a")

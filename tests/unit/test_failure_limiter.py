"""The wrong-secret limiter: attempts reserved when they start, refunded only when right."""

from gateway.auth.failures import FLEET_FACTOR, FailureLimiter, Reservation


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reserve(limiter: FailureLimiter, key_id: str, client: str) -> Reservation:
    got = limiter.reserve(key_id, client)
    assert isinstance(got, Reservation), f"throttled: retry after {got}s"
    return got


def test_attempts_count_when_they_start_in_flight_included() -> None:
    limiter = FailureLimiter(window=10, max_failures=3, clock=Clock())
    held = [reserve(limiter, "id1", "10.0.0.9") for _ in range(3)]  # none has finished
    assert limiter.reserve("id1", "10.0.0.9") == 10  # the 4th waits for the window
    assert len(held) == 3


def test_one_client_is_cut_off_without_locking_out_others() -> None:
    limiter = FailureLimiter(window=10, max_failures=3, clock=Clock())
    for _ in range(3):
        reserve(limiter, "id1", "10.0.0.9")
    assert limiter.retry_after("id1", "10.0.0.9") == 10
    assert limiter.retry_after("id1", "10.0.0.1") is None  # the key's real user
    assert limiter.retry_after("id2", "10.0.0.9") is None  # other keys
    # Refused attempts are not counted: one client can never push the id to its cap.
    for _ in range(1000):
        assert not isinstance(limiter.reserve("id1", "10.0.0.9"), Reservation)
    assert limiter.retry_after("id1", "10.0.0.1") is None


def test_a_flood_from_many_clients_is_capped_per_key() -> None:
    limiter = FailureLimiter(window=10, max_failures=3, clock=Clock())
    for i in range(3 * FLEET_FACTOR):
        reserve(limiter, "id1", f"10.0.{i}.1")
    assert limiter.retry_after("id1", "10.9.9.9") == 10
    assert limiter.retry_after("id2", "10.9.9.9") is None


def test_only_a_right_secret_gives_its_place_back() -> None:
    limiter = FailureLimiter(window=10, max_failures=2, clock=Clock())
    right = reserve(limiter, "id1", "a")
    reserve(limiter, "id1", "a")  # wrong, or its client went away: never refunded
    limiter.refund(right)
    reserve(limiter, "id1", "a")
    assert limiter.retry_after("id1", "a") == 10


def test_a_refund_from_an_ended_window_does_not_open_the_next() -> None:
    clock = Clock()
    limiter = FailureLimiter(window=10, max_failures=1, clock=clock)
    old = reserve(limiter, "id1", "a")
    clock.now = 10.0
    reserve(limiter, "id1", "a")
    limiter.refund(old)  # counted in a window that has ended
    assert limiter.retry_after("id1", "a") == 10


def test_the_window_ends_and_retry_after_counts_down() -> None:
    clock = Clock()
    limiter = FailureLimiter(window=10, max_failures=1, clock=clock)
    reserve(limiter, "id1", "a")
    clock.now = 7.5
    assert limiter.retry_after("id1", "a") == 3  # whole seconds, rounded up
    clock.now = 10.0
    assert limiter.retry_after("id1", "a") is None
    reserve(limiter, "id1", "a")
    assert limiter.retry_after("id1", "a") == 10

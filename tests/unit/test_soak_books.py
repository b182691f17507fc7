"""The soak's books: a record that came back later than asked, or was asked to wait longer
than Klaviyo said, is counted; one that waited for a busy fleet, or that moto lost, is not."""

from __future__ import annotations

from devtools.soak import Books, duplicate_profiles, late_records


def consumer(receives=(), hand_backs=(), short_polls=()):
    return {
        "receives": [list(r) for r in receives],
        "hand_backs": list(hand_backs),
        "short_polls": [list(p) for p in short_polls],
        "failed_receives": [],
    }


def hand_back(at, visibility, retry_in=None, reason="Klaviyo returned HTTP 429 (rate limited)"):
    return {
        "message_id": "m",
        "at": at,
        "visibility": visibility,
        "retry_in": retry_in,
        "reason": reason,
        "refused": False,
    }


def books(*consumers, longest_retry_after=30):
    return Books(consumers=list(consumers), longest_retry_after=longest_retry_after)


def test_a_record_that_came_back_when_asked_is_on_time():
    figures = late_records(
        books(consumer([(100, "m", 1), (131, "m", 2)], [hand_back(101, 30, 25.0)], [(120, 120.1)]))
    )
    assert figures["received_later_than_asked"] == 0
    assert figures["longest_overshoot_seconds"] == 0.0


def test_a_record_that_stayed_away_while_the_queue_looked_empty_is_late():
    figures = late_records(
        books(consumer([(100, "m", 1), (200, "m", 2)], [hand_back(101, 30, 25.0)], [(150, 150.1)]))
    )
    assert figures["received_later_than_asked"] == 1
    assert figures["longest_overshoot_seconds"] == 69.0


def test_a_record_that_waited_for_a_busy_fleet_is_not_late():
    """Nobody polled between when it was due and when it came: every consumer was busy."""
    figures = late_records(
        books(consumer([(100, "m", 1), (200, "m", 2)], [hand_back(101, 30, 25.0)], [(199, 200)]))
    )
    assert figures["received_later_than_asked"] == 0


def test_a_delivery_nobody_saw_is_counted_apart():
    figures = late_records(
        books(consumer([(100, "m", 1), (250, "m", 3)], [hand_back(101, 30, 25.0)], [(150, 150.1)]))
    )
    assert figures["received_later_than_asked"] == 0
    assert figures["deliveries_nobody_saw"] == 1


def test_a_visibility_beyond_retry_after_and_jitter_is_counted():
    asked = [hand_back(0, 37, 30.0), hand_back(0, 45, 30.0), hand_back(0, 40, 40.0)]
    figures = late_records(books(consumer(hand_backs=asked), longest_retry_after=30))
    # 37 s is 30 s plus 20 % jitter; 45 s is more; a 40 s wait is more than Klaviyo asked.
    assert figures["visibility_longer_than_asked"] == 2


def test_the_pacers_own_wait_is_bounded_by_the_minute_not_by_retry_after():
    own = "Klaviyo's rate limit leaves no room for 55 s; not sent"
    figures = late_records(
        books(
            consumer(hand_backs=[hand_back(0, 60, 55.0, own), hand_back(0, 90, 75.0, own)]),
            longest_retry_after=1,
        )
    )
    assert figures["visibility_longer_than_asked"] == 1  # 75 s: beyond 60 s and the spread


def test_duplicate_profiles_count_extra_profiles_per_email_or_external_id():
    profiles = [
        {"attributes": {"email": "a@example.com"}},
        {"attributes": {"email": "a@example.com"}},
        {"attributes": {"external_id": "x"}},
        {"attributes": {"external_id": "x"}},
        {"attributes": {"external_id": "x"}},
        {"attributes": {"email": "b@example.com"}},
    ]
    assert duplicate_profiles(profiles) == 3

"""The account every run starts from, and a realistic mix of leads for each of the eleven actions.

The account (``seed_account``): one double opt-in list and one segment, and ``size`` existing
profiles ``lead0000000@bench.example.com`` ... with a first and last name, every second one with
a phone number; 90 % of them are on the list, two in three in the segment.

The leads (``leads``): what a lead platform sends, mostly good, a few not, in a fixed pattern
over each hundred leads so that any run of a few hundred has the same mix (``MIX`` says it in
words, for the report). Every mix has 2 % leads that cannot be sent (an invalid email, no
identifier) and a few that Klaviyo answers with a failure (unknown person, duplicate). The
same leads in the same account give the same outcomes one by one and in bulk; the benchmark
checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devtools.klaviyo_emulator import KlaviyoEmulator

LIST_NAME = "Bench newsletter"
SEGMENT_NAME = "Bench VIP"
METRIC = "Lead Received"
DOMAIN = "bench.example.com"


@dataclass(frozen=True)
class Account:
    list_id: str
    segment_id: str
    size: int  # existing profiles: existing_email(0 .. size - 1)


def existing_email(index: int) -> str:
    return f"lead{index:07d}@{DOMAIN}"


def new_email(index: int) -> str:
    return f"new{index:07d}@{DOMAIN}"


def existing_phone(index: int) -> str:
    """Every second existing profile has one: ``+1 512 3xx xxxx``."""
    return f"+1 512 {300 + index // 10_000:03d} {index % 10_000:04d}"


def new_phone(index: int) -> str:
    """A number no existing profile has, written as a lead platform writes it."""
    return f"(415) {200 + index // 10_000:03d}-{index % 10_000:04d}"


def on_list(index: int) -> bool:
    return index % 10 != 9


def in_segment(index: int) -> bool:
    return index % 3 != 2


def seed_account(emulator: KlaviyoEmulator, size: int) -> Account:
    list_id = emulator.create_list(LIST_NAME)
    segment_id = emulator.create_segment(SEGMENT_NAME, "BenchV")
    members: list[str] = []
    for index in range(size):
        attributes: dict[str, Any] = {
            "email": existing_email(index),
            "first_name": "Bench",
            "last_name": f"Lead {index}",
        }
        if index % 2 == 0:
            attributes["phone_number"] = existing_phone(index).replace(" ", "")
        profile_id = emulator.create_profile(**attributes)
        if on_list(index):
            members.append(profile_id)
        if in_segment(index):
            emulator.add_to_segment(segment_id, profile_id)
    if members:
        emulator.add_to_list(list_id, *members)
    return Account(list_id, segment_id, size)


# -- the mixes ------------------------------------------------------------------------------

INVALID = "2 % invalid (a malformed email, or no identifier at all)"

MIX: dict[str, str] = {
    "create_profile": "60 % email + phone, 33 % email only, 3 % an email the account has,"
    " 2 % the email of a new lead 40 before it, " + INVALID,
    "get_profiles": "90 % by email, 5 % by phone, 3 % unknown, " + INVALID,
    "get_segment_profiles": "by email: 2/3 members, 1/3 not; 3 % unknown, " + INVALID,
    "update_profile": "88 % existing with a change (name, title, city; 2 % a new phone), 5 %"
    " no change, 3 % unknown, " + INVALID,
    "add_profile_to_list": "95 % existing (90 % already on the list), 3 % unknown, " + INVALID,
    "subscribe_profile_to_list": "80 % new email, 15 % new email + phone (email and SMS),"
    " 3 % existing, " + INVALID,
    "unsubscribe_profile": "by email, 90 % list members, 10 % not; 3 % unknown, " + INVALID,
    "remove_profile_from_list": "by email, 90 % list members, 10 % not; 3 % unknown, " + INVALID,
    "upsert_profile": "45 % new email + phone, 30 % new email, 20 % existing with a change,"
    " 3 % the email of a new lead 40 before it, " + INVALID,
    "track_event": "90 % existing people, 8 % new ones, all with an id and properties, " + INVALID,
    "delete_profile": "95 % existing (by email), 3 % unknown, " + INVALID,
}


def _invalid(slot: int) -> dict[str, Any] | None:
    if slot == 98:
        return {"email": "not-an-email", "first_name": "Typo"}
    if slot == 99:
        return {"first_name": "No", "last_name": "Identifier"}
    return None


def lead(action: str, index: int, account: Account) -> dict[str, Any]:
    """Lead ``index`` of ``action``'s mix; existing people are taken in turn from the account."""
    slot = index % 100
    person = index % account.size if account.size else 0
    bad = _invalid(slot)
    body = bad if bad is not None else _MIXES[action](index, slot, person, account)
    return {**body, **_settings(action, account)}


def _settings(action: str, account: Account) -> dict[str, Any]:
    if action in ("add_profile_to_list", "remove_profile_from_list", "unsubscribe_profile"):
        return {"klaviyo.list_id": account.list_id}
    if action == "subscribe_profile_to_list":
        return {"klaviyo.list_id": account.list_id}
    if action == "get_segment_profiles":
        return {"klaviyo.segment_id": account.segment_id}
    return {}


def _create(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    if slot < 60:
        return {
            "email": new_email(index),
            "phone_1": new_phone(index),
            "first_name": "New",
            "last_name": f"Lead {index}",
            "company.name": "Example Co",
        }
    if slot < 93:
        return {"email": new_email(index), "first_name": "New", "last_name": f"Lead {index}"}
    if slot < 96:
        return {"email": existing_email(person), "first_name": "Again"}
    return {"email": new_email(index - 40), "first_name": "Twice"}  # lead index - 40's


def _get(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    if slot < 90:
        return {"email": existing_email(person)}
    if slot < 95:
        even = person - person % 2
        return {"phone_1": existing_phone(even)}
    return {"email": new_email(index)}


def _segment(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    if slot < 95:
        return {"email": existing_email(person)}
    return {"email": new_email(index)}


def _update(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    email = existing_email(person)
    if slot < 86:
        return {
            "email": email,
            "first_name": "Changed",
            "title": f"Title {index}",
            "city": "Austin",
        }
    if slot < 88:
        return {"email": email, "phone_1": new_phone(index)}
    if slot < 93:
        return {"email": email, "first_name": "Bench", "last_name": f"Lead {person}"}
    if slot < 96:
        return {"email": new_email(index), "first_name": "Nobody"}
    return {"email": email, "title": f"Title {index}"}


def _list_member(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    if slot < 95:
        return {"email": existing_email(person)}
    return {"email": new_email(index)}


def _subscribe(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    if slot < 80:
        return {"email": new_email(index), "first_name": "New"}
    if slot < 95:
        return {
            "email": new_email(index),
            "phone_1": new_phone(index),
            "klaviyo.channels": "email sms",
        }
    return {"email": existing_email(person)}


def _upsert(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    if slot < 45:
        return {"email": new_email(index), "phone_1": new_phone(index), "first_name": "New"}
    if slot < 75:
        return {"email": new_email(index), "first_name": "New", "last_name": f"Lead {index}"}
    if slot < 95:
        return {"email": existing_email(person), "title": f"Title {index}"}
    return {"email": new_email(index - 40), "title": "Again"}  # lead index - 40's


def _track(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    email = existing_email(person) if slot < 90 else new_email(index)
    return {
        "id": f"lead-{index:07d}",
        "email": email,
        "campaign": "Spring webinar",
        "source": "landing page",
        "klaviyo.metric_name": METRIC,
        "klaviyo.event_value": 25,
    }


def _delete(index: int, slot: int, person: int, account: Account) -> dict[str, Any]:
    if slot < 95:
        return {"email": existing_email(person)}
    return {"email": new_email(index)}


_MIXES = {
    "create_profile": _create,
    "get_profiles": _get,
    "get_segment_profiles": _segment,
    "update_profile": _update,
    "add_profile_to_list": _list_member,
    "remove_profile_from_list": _list_member,
    "unsubscribe_profile": _list_member,
    "subscribe_profile_to_list": _subscribe,
    "upsert_profile": _upsert,
    "track_event": _track,
    "delete_profile": _delete,
}

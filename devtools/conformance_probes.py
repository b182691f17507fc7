"""Behaviour probes: small experiments that measure what the emulator only assumes.

Each probe runs against a conformance ``Target`` (the emulator or a real account) and returns a
``Probe``: the measured value (None when it could not run, with the reason) and, for the
emulator, its setting. Time is the target's clock: the emulator's fake clock in the tests (the
client's sleep moves it), real time against Klaviyo. Every profile a probe makes carries the
run's tag in its email's local part and in the ``conformance_tag`` custom property.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.conformance_target import Target
from klaviyo_leads.klaviyo.client import Response, filter_value

IMPORT_JOBS = "/api/profile-bulk-import-jobs"
# When a search is tried again after a write (seconds after it): fine at first, then sparse,
# so a lag of minutes costs few requests. A lag is reported as the first time it showed.
SEARCH_SCHEDULE = (0, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 90, 120)
IMPORT_SIZES = (10, 100, 1000)
IMPORT_WAIT_SECONDS = 900.0
# The subscribe probe's profiles (its jobs make them): historical, double opt-in, SMS.
SUBSCRIBE_PROFILES = ("sub0", "sub1", "sub2")
# The scenario's own tagged profiles, by email suffix: its actions' creates and its import.
SCENARIO_PROFILES = ("create", "upsert", "import0", "import1", "import2", *SUBSCRIBE_PROFILES)


@dataclass
class Probe:
    key: str  # its key in conformance.json
    value: Any
    setting: Any = None  # the emulator's (None against Klaviyo)
    why: str = ""  # why the value is None
    detail: str = ""

    def agrees(self) -> bool:
        """Whether the value is what the setting predicts (a lag within the schedule's step)."""
        if self.value is None:
            return self.setting is None
        if isinstance(self.value, dict) and isinstance(self.setting, dict):
            return all(
                _close(self.value.get(k), self.setting[k], f"{self.key}.{k}") for k in self.setting
            )
        return _close(self.value, self.setting, self.key)


# Profiles per second above which a job counts as done at once (the emulator's rate 0).
AT_ONCE_RATE = 1000.0


# How far a window's measured length may be from the setting: Reset is whole seconds.
WINDOW_TOLERANCE_SECONDS = 1.5


def _close(measured: Any, setting: Any, key: str = "") -> bool:
    if key.endswith("_seconds") and key.startswith("rate_limit_windows."):
        numbers = isinstance(measured, int | float) and isinstance(setting, int | float)
        return bool(numbers and abs(measured - setting) <= WINDOW_TOLERANCE_SECONDS)
    if key == "import_profiles_per_second" and setting == 0:
        return bool(measured == 0 or measured >= AT_ONCE_RATE)
    if isinstance(measured, bool) or isinstance(setting, bool):
        return bool(measured is setting)
    if isinstance(measured, int | float) and isinstance(setting, int | float):
        # A lag shows at the first try after it: within one step of the schedule.
        earlier = [t for t in SEARCH_SCHEDULE if t < measured]
        floor = earlier[-1] if earlier else 0.0
        return bool(floor <= setting <= measured or abs(measured - setting) < 1e-6)
    return bool(measured == setting)


def tagged(target: Target, n: str, **attributes: Any) -> dict[str, Any]:
    """A profile's attributes, tagged with the run's tag."""
    return {
        "email": f"conformance+{target.tag}-{n}@example.com",
        "properties": {"conformance_tag": target.tag},
        **attributes,
    }


def phone_for(target: Target, n: int) -> str:
    return f"+1202555{(int(target.tag[:6], 16) + n) % 10_000:04d}"


def _created(target: Target, answer: Any) -> str | None:
    if isinstance(answer, Response) and isinstance(answer.data, dict) and answer.status == 201:
        profile_id = answer.data.get("id")
        if isinstance(profile_id, str):
            target.created.append(profile_id)
            return profile_id
    return None


def search_lag(target: Target, clock: Callable[[], float]) -> dict[str, float | None]:
    """Seconds from a profile's create until a search by each identifier finds it."""
    found: dict[str, float | None] = {}
    for n, identifier in enumerate(("email", "phone_number", "external_id")):
        attributes = tagged(target, f"lag{n}")
        attributes["phone_number"] = phone_for(target, n)
        attributes["external_id"] = f"conformance-{target.tag}-lag{n}"
        body = {"data": {"type": "profile", "attributes": attributes}}
        answer = target.send("POST", "/api/profiles", body=body)
        written = clock()  # from Klaviyo's answer: a wait to space the calls is no lag
        if _created(target, answer) is None:
            found[identifier] = None
            continue
        query = {"filter": f"equals({identifier},{filter_value(attributes[identifier])})"}
        found[identifier] = first_found(target, "/api/profiles", query, written, clock)
    return found


def first_found(
    target: Target, path: str, query: dict[str, str], since: float, clock: Callable[[], float]
) -> float | None:
    """Seconds from ``since`` until the read finds something, tried on ``SEARCH_SCHEDULE``;
    None when it never did."""
    for at in SEARCH_SCHEDULE:
        wait = since + at - clock()
        if wait > 0:
            target.client.sleep(wait)
        answer = target.send("GET", path, query=query)
        if isinstance(answer, Response) and answer.data:
            return round(clock() - since, 3)
    return None


def import_job(target: Target, profiles: list[dict[str, Any]]) -> Any:
    data = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
    return target.send("POST", IMPORT_JOBS, body={"data": data})


def wait_for_job(target: Target, job_id: str, clock: Callable[[], float]) -> dict[str, Any] | None:
    """The job's attributes once complete (None: it did not finish in time)."""
    started = clock()
    pause = 0.25
    while clock() - started < IMPORT_WAIT_SECONDS:
        answer = target.send("GET", f"{IMPORT_JOBS}/{job_id}")
        if isinstance(answer, Response) and isinstance(answer.data, dict):
            attributes = answer.data.get("attributes") or {}
            if attributes.get("status") in ("complete", "cancelled", "failed"):
                return dict(attributes)
        target.client.sleep(pause)
        pause = min(pause * 2, 10.0)
    return None


def job_profile_ids(target: Target, job_id: str) -> list[str]:
    """The ids of every profile a job touched, read as the bundle reads them (its profiles,
    100 to a page, following each page's next link)."""
    ids: list[str] = []
    page: str | None = f"{IMPORT_JOBS}/{job_id}/profiles"
    query: dict[str, str] | None = {"page[size]": "100"}
    while page is not None:
        answer = target.send("GET", page, query=query)
        if not (isinstance(answer, Response) and isinstance(answer.data, list)):
            break
        ids += [item["id"] for item in answer.data if isinstance(item, dict) and "id" in item]
        links = answer.body.get("links") if isinstance(answer.body, dict) else None
        page = links.get("next") if isinstance(links, dict) else None
        query = None  # the next link carries the whole query
    return ids


def _seconds(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def import_timing(
    target: Target, clock: Callable[[], float], sizes: tuple[int, ...] = IMPORT_SIZES
) -> tuple[float | None, float | None, str]:
    """Queue delay (median) and profiles per second (the largest job) from the jobs' stamps.

    A job done the moment it starts reads as 0 profiles per second: the emulator's "at once".
    """
    queues: list[float] = []
    rate: float | None = None
    notes = []
    for size in sizes:
        profiles = [
            {"type": "profile", "attributes": tagged(target, f"imp{size}-{i}")} for i in range(size)
        ]
        answer = import_job(target, profiles)
        if not (isinstance(answer, Response) and answer.status == 202):
            notes.append(f"{size}: job refused")
            continue
        job_id = answer.data["id"]
        attributes = wait_for_job(target, job_id, clock)
        target.created += job_profile_ids(target, job_id)
        if attributes is None:
            notes.append(f"{size}: not complete after {IMPORT_WAIT_SECONDS:.0f} s")
            continue
        queue = _seconds(attributes.get("created_at"), attributes.get("started_at"))
        run = _seconds(attributes.get("started_at"), attributes.get("completed_at"))
        if queue is not None:
            queues.append(queue)
        if run is not None:
            rate = round(size / run, 3) if run > 0 else 0.0
        notes.append(f"{size}: queued {queue} s, ran {run} s")
    queue_median = round(statistics.median(queues), 3) if queues else None
    return queue_median, rate, "; ".join(notes)


def import_all_or_nothing(target: Target, clock: Callable[[], float]) -> tuple[bool | None, str]:
    """One doubled-dot email among valid ones: the whole job refused (True), or an import
    error of a job that imports the rest (False)."""
    profiles = [{"type": "profile", "attributes": tagged(target, f"val{i}")} for i in range(3)]
    bad = tagged(target, "bad")
    bad["email"] = f"conformance+{target.tag}..bad@example.com"
    profiles.append({"type": "profile", "attributes": bad})
    answer = import_job(target, profiles)
    if isinstance(answer, Response) and answer.status == 400:
        return True, "the job was refused whole (400)"
    if not (isinstance(answer, Response) and answer.status == 202):
        return None, f"unexpected answer {getattr(answer, 'status', None)}"
    job_id = answer.data["id"]
    attributes = wait_for_job(target, job_id, clock)
    target.created += job_profile_ids(target, job_id)
    if attributes is None:
        return None, "the job did not finish"
    failed = attributes.get("failed_count")
    return False, f"accepted (202): {attributes.get('completed_count')} imported, {failed} failed"


def import_matches_external_id(
    target: Target, clock: Callable[[], float]
) -> tuple[bool | None, str]:
    """An import of only an external id that an existing profile holds: updated (True) or a
    new profile (False)."""
    external_id = f"conformance-{target.tag}-match"
    body = {
        "data": {"type": "profile", "attributes": tagged(target, "match", external_id=external_id)}
    }
    profile_id = _created(target, target.send("POST", "/api/profiles", body=body))
    if profile_id is None:
        return None, "could not create the profile to match"
    attributes = {
        "external_id": external_id,
        "properties": {"conformance_tag": target.tag, "conformance_probe": "matched"},
    }
    answer = import_job(target, [{"type": "profile", "attributes": attributes}])
    if not (isinstance(answer, Response) and answer.status == 202):
        return None, f"the import was refused ({getattr(answer, 'status', None)})"
    job_id = answer.data["id"]
    if wait_for_job(target, job_id, clock) is None:
        return None, "the job did not finish"
    ids = job_profile_ids(target, job_id)
    target.created += [i for i in ids if i != profile_id]
    if profile_id in ids:
        return True, "the import updated the existing profile"
    return False, f"the import made {len(ids)} other profile(s)"


def segment_lag(target: Target, clock: Callable[[], float]) -> tuple[float | None, str]:
    """Seconds from a tagged profile's add to the scratch list until the scratch segment
    lists it. The segment must be defined as "member of the scratch list": Klaviyo computes
    segment membership after the fact, so the add shows there later, if at all."""
    body = {"data": {"type": "profile", "attributes": tagged(target, "seg")}}
    profile_id = _created(target, target.send("POST", "/api/profiles", body=body))
    if profile_id is None:
        return None, "could not create the profile to add"
    members = {"data": [{"type": "profile", "id": profile_id}]}
    path = f"/api/lists/{target.list_id}/relationships/profiles"
    answer = target.send("POST", path, body=members)
    if not (isinstance(answer, Response) and answer.status == 204):
        return None, f"the list add was refused ({getattr(answer, 'status', None)})"
    added = clock()
    query = {"filter": f"any(profile_id,[{filter_value(profile_id)}])", "page[size]": "100"}
    path = f"/api/segments/{target.segment_id}/profiles"
    lag = first_found(target, path, query, added, clock)
    if lag is not None:
        return lag, f"in the segment {lag} s after the list add"
    return None, (
        f"not in the segment {SEARCH_SCHEDULE[-1]} s after the list add: is the segment "
        "defined as member of the scratch list?"
    )


# The window probe spends a cheap read (750 a minute): this many calls, this many seconds
# apart (wider than Reset's one-second steps), and one more once the window has turned over
# (one more first when the window would end among them).
WINDOW_PROBE_OPERATION = "get_list"
WINDOW_PROBE_CALLS = 3
WINDOW_PROBE_SPACING = 2.0


def rate_limit_windows(target: Target, clock: Callable[[], float]) -> tuple[dict[str, Any], str]:
    """Whether the ``RateLimit-*`` headers count a steady window, and its length in seconds.

    A few reads of one list seconds apart: Remaining should fall by one a call and Reset
    count down with the clock; one more read just after Reset has run out should find the
    window full again, and its Reset then tells the window's length (to the second: Reset
    is whole seconds). The headers describe the steady window only, so the 1 s burst
    window cannot be seen without running into it (a 429): it stays null.
    """
    path = f"/api/lists/{target.list_id}"
    seen: list[tuple[float, float, float, float]] = []  # when, limit, remaining, reset

    def look() -> tuple[float, float, float, float] | None:
        answer = target.send("GET", path)
        if not isinstance(answer, Response):
            return None
        limit, remaining, reset = (
            _number(answer.headers.get(f"ratelimit-{name}"))
            for name in ("limit", "remaining", "reset")
        )
        if limit is None or remaining is None or reset is None:
            return None
        seen.append((clock(), limit, remaining, reset))
        return seen[-1]

    found: dict[str, Any] = {
        "steady_seconds": None,
        "burst_seconds": None,
        "remaining_falls_by_one": None,
        "reset_counts_down": None,
        "limit": None,
    }
    first = look()
    if first is None:
        return found, "no RateLimit-Limit, -Remaining and -Reset on the list read"
    span = (WINDOW_PROBE_CALLS - 1) * WINDOW_PROBE_SPACING + 1.0
    if first[3] < span:
        # The window ends before the reads would: they start in the next one.
        target.client.sleep(first[3] + 0.5)
        seen.clear()
        look()
    for _ in range(WINDOW_PROBE_CALLS - 1):
        target.client.sleep(WINDOW_PROBE_SPACING)
        if look() is None:
            return found, "no RateLimit-Limit, -Remaining and -Reset on the list read"
    if len(seen) < WINDOW_PROBE_CALLS:
        return found, "no RateLimit-Limit, -Remaining and -Reset on the list read"
    pairs = list(itertools.pairwise(seen))
    last = seen[-1]
    found["limit"] = last[1]
    found["remaining_falls_by_one"] = all(b[2] == a[2] - 1 for a, b in pairs)
    # Reset is whole seconds: it may fall a second more or less than the clock moved.
    found["reset_counts_down"] = all(abs((a[3] - b[3]) - (b[0] - a[0])) <= 1.0 for a, b in pairs)
    ends = last[0] + last[3]
    wait = ends + 0.5 - clock()
    if wait > 0:
        target.client.sleep(wait)
    after = look()
    if after is None:
        return found, "no RateLimit-* headers on the read after the window"
    if after[2] <= last[2]:
        return found, f"Remaining did not come back {after[0] - ends:.1f} s after Reset ran out"
    # A window that opened when the last one ended (or at this read) ends Reset from now.
    found["steady_seconds"] = round(after[0] + after[3] - ends, 1)
    return found, (
        f"Remaining {', '.join(str(int(s[2])) for s in seen[:-1])} of {int(last[1])}, then "
        f"{int(after[2])} after Reset; the next window ends {after[3]:.0f} s on; "
        "the burst window has no header"
    )


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def percentiles(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Milliseconds per operation: p50, p90 and p99 of the samples (seconds)."""

    def at(values: list[float], share: float) -> float:
        ordered = sorted(values)
        index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
        return round(ordered[index] * 1000, 1)

    return {
        name: {"p50": at(v, 0.5), "p90": at(v, 0.9), "p99": at(v, 0.99)}
        for name, v in sorted(samples.items())
        if v
    }


def tagged_emails(tag: str, sizes: tuple[int, ...] = IMPORT_SIZES) -> list[str]:
    """Every email address a run with this tag gives its profiles."""
    suffixes = ["", "-match", "-seg", *(f"-lag{n}" for n in range(3))]
    suffixes += [f"-{name}" for name in SCENARIO_PROFILES]
    suffixes += [f"-val{i}" for i in range(3)]
    suffixes += [f"-imp{size}-{i}" for size in sizes for i in range(size)]
    return [f"conformance+{tag}{suffix}@example.com" for suffix in suffixes]


def find_tagged(target: Target, sizes: tuple[int, ...] = IMPORT_SIZES) -> list[str]:
    """The ids of the profiles a run with ``target.tag`` made, found by their addresses (and
    the external id of the identity probe's import): nothing else is ever matched."""
    found: list[str] = []
    emails = tagged_emails(target.tag, sizes)
    filters = [
        f"any(email,[{','.join(filter_value(e) for e in emails[i : i + 100])}])"
        for i in range(0, len(emails), 100)
    ]
    filters.append(f"equals(external_id,{filter_value(f'conformance-{target.tag}-match')})")
    for expression in filters:
        answer = target.send(
            "GET", "/api/profiles", query={"filter": expression, "page[size]": "100"}
        )
        if not (isinstance(answer, Response) and isinstance(answer.data, list)):
            # A search that got no answer would leave its profiles out of the clean-up.
            status = answer.status if isinstance(answer, Response) else None
            why = getattr(answer, "shape", "") or f"status {status}"
            raise SearchFailed(f"a search for the run's profiles got no answer ({why})")
        found += [p["id"] for p in answer.data if isinstance(p, dict) and "id" in p]
    return list(dict.fromkeys(found))


class SearchFailed(Exception):
    """The profiles of a run could not all be looked for: nothing is cleaned up."""


# -- consent: when a subscribe applies, and what it applies ------------------------------------

SUBSCRIBE_JOBS = "/api/profile-subscription-bulk-create-jobs"
# Ofcom's range for drama (020 7946 0000-0999): a valid UK number that is never anyone's.
UK_DRAMA_NUMBER = "+442079460958"
# Beyond the apply time, how long a double opt-in is watched not to apply.
PENDING_WATCH_SECONDS = 10.0


def subscribe_job(
    email: str,
    *,
    list_id: str | None = None,
    historical_at: str | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """A one-profile subscribe job as the bundle sends one
    (``klaviyo_leads.actions.subscribe.subscribe``)."""
    marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
    if historical_at:
        marketing["consented_at"] = historical_at
    channels = {"email": {"marketing": marketing}}
    attributes: dict[str, Any] = {"email": email}
    if phone:
        channels["sms"] = {"marketing": dict(marketing)}
        attributes["phone_number"] = phone
    attributes["subscriptions"] = channels
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job",
        "attributes": {
            "custom_source": "conformance",
            "historical_import": historical_at is not None,
            "profiles": {"data": [{"type": "profile", "attributes": attributes}]},
        },
    }
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def _consent_of(target: Target, email: str) -> str | None:
    """The profile's email marketing consent as the read-back sees it (None: not found)."""
    query = {
        "filter": f"any(email,[{filter_value(email)}])",
        "additional-fields[profile]": "subscriptions",
        "page[size]": "100",
    }
    answer = target.send("GET", "/api/profiles", query=query)
    if not (isinstance(answer, Response) and isinstance(answer.data, list) and answer.data):
        return None
    subscriptions = (answer.data[0].get("attributes") or {}).get("subscriptions") or {}
    consent = ((subscriptions.get("email") or {}).get("marketing") or {}).get("consent")
    return consent if isinstance(consent, str) else None


def subscribe_rules(target: Target, clock: Callable[[], float]) -> tuple[dict[str, Any], str]:
    """What a subscribe job does on the account, as the bundle's read-back sees it:

    - ``apply_seconds``: from a (historical, so never double opt-in) job's 202 for a profile
      the search already finds until it shows the consent: what the read-back waits for (a
      profile the job makes is found only after the search's lag as well);
    - ``double_opt_in_pending``: a job on the scratch list, when it is double opt-in, still
      shows no consent a while after that (None for a single opt-in list);
    - ``sms_refused_outside_sending_countries``: a job with SMS for a UK number is refused
      (400), as for an account that cannot text the UK (SMS not set up, or US only).

    Not probed, said in the note: a hard bounce (no API makes one on a test account) and age
    gating (it would subscribe a number the account can text)."""
    rules: dict[str, Any] = dict.fromkeys(
        ("apply_seconds", "double_opt_in_pending", "sms_refused_outside_sending_countries")
    )
    notes = ["hard bounce and age gating not probed (no API makes a bounce; no number texted)"]
    # Each job subscribes a tagged profile made first (a job cannot set the tag property).
    emails = []
    for name in SUBSCRIBE_PROFILES:
        attributes = tagged(target, name)
        made = target.send(
            "POST", "/api/profiles", body={"data": {"type": "profile", "attributes": attributes}}
        )
        _created(target, made)
        emails.append(attributes["email"])
    email = emails[0]
    # Found by the search first: what is timed is the job, not the search's lag.
    first_found(
        target, "/api/profiles", {"filter": f"equals(email,{filter_value(email)})"}, clock(), clock
    )
    body = subscribe_job(email, historical_at="2024-01-01T00:00:00+00:00")
    answer = target.send("POST", SUBSCRIBE_JOBS, body=body)
    accepted = clock()
    if isinstance(answer, Response) and answer.status == 202:
        for at in SEARCH_SCHEDULE:
            wait = accepted + at - clock()
            if wait > 0:
                target.client.sleep(wait)
            if _consent_of(target, email) == "SUBSCRIBED":
                # To the search that showed it, as it went out (not the run's own spacing).
                rules["apply_seconds"] = round(target.sent_at - accepted, 3)
                break
        else:
            notes.append(f"a historical subscribe not applied {SEARCH_SCHEDULE[-1]} s after 202")
    else:
        notes.append(f"the historical subscribe was refused ({getattr(answer, 'status', None)})")
    listed = target.send("GET", f"/api/lists/{target.list_id}", query=_OPT_IN_FIELD)
    process = (
        ((listed.data or {}).get("attributes") or {}).get("opt_in_process")
        if isinstance(listed, Response) and isinstance(listed.data, dict)
        else None
    )
    if process == "double_opt_in":
        email = emails[1]
        answer = target.send(
            "POST", SUBSCRIBE_JOBS, body=subscribe_job(email, list_id=target.list_id)
        )
        if isinstance(answer, Response) and answer.status == 202:
            target.client.sleep((rules["apply_seconds"] or 0.0) + PENDING_WATCH_SECONDS)
            rules["double_opt_in_pending"] = _consent_of(target, email) != "SUBSCRIBED"
    else:
        notes.append(f"the scratch list is {process or 'unreadable'}: double opt-in not probed")
    email = emails[2]
    answer = target.send("POST", SUBSCRIBE_JOBS, body=subscribe_job(email, phone=UK_DRAMA_NUMBER))
    if isinstance(answer, Response) and answer.status in (202, 400):
        rules["sms_refused_outside_sending_countries"] = answer.status == 400
    return rules, "; ".join(notes)


_OPT_IN_FIELD = {"fields[list]": "opt_in_process"}

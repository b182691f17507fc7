"""Conformance: one fixed scenario against the emulator and, when given, a real Klaviyo account.

    make conformance
    KLAVIYO_API_KEY=pk_... KLAVIYO_LIST_ID=... KLAVIYO_SEGMENT_ID=... make conformance

The scenario runs the bundle's actions and bulk paths (its import, bulk events, any()
searches, pagination) through its own client, and a few requests of its own (duplicates,
invalid input, a bad key); it prints a side-by-side table of statuses (an action's outcome),
error codes (an action's calls) and response shapes (an action's reason), marking every
difference, and then the behaviour probes. Run it against a test account before going live:
it shows where Klaviyo answers differently from the emulator the tests trust.

Against Klaviyo it touches only the profiles it creates (unique email addresses and a
``conformance_tag`` property carrying the run's tag), and requests their deletion at the end
(Klaviyo's data-privacy deletion job); ``--cleanup <tag>`` finishes a run that stopped before.
The list and segment should be scratch ones, the segment defined as "member of the scratch
list": the profiles join the list, are subscribed to it and unsubscribed from it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from devtools import conformance_probes as probes  # noqa: E402
from devtools.conformance_target import ACTION_SECONDS, Observation, Target  # noqa: E402
from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator  # noqa: E402
from devtools.klaviyo_emulator.contract import default_spec_path  # noqa: E402
from devtools.klaviyo_emulator.spec_rules import WINDOW_SECONDS  # noqa: E402
from klaviyo_leads import outcomes  # noqa: E402
from klaviyo_leads.actions import (  # noqa: E402
    imports,
    lookup,
    track_event,
)
from klaviyo_leads.actions.action import run_action  # noqa: E402
from klaviyo_leads.actions.table import ACTIONS  # noqa: E402
from klaviyo_leads.budget import Budget  # noqa: E402
from klaviyo_leads.config import Settings  # noqa: E402
from klaviyo_leads.context import Context  # noqa: E402
from klaviyo_leads.klaviyo.client import KlaviyoClient, Response, filter_value  # noqa: E402
from klaviyo_leads.klaviyo.pacing import Pacer  # noqa: E402
from klaviyo_leads.lead.record import Lead  # noqa: E402
from klaviyo_leads.outcomes import Result  # noqa: E402

KLAVIYO_URL = "https://a.klaviyo.com"
# What the scenario reads only to record Klaviyo's answer beside the emulator's (the bundle
# never calls it, so the route table does not name it): the list's member ids.
OBSERVED_ONLY = (("GET", re.compile(r"^/api/lists/[^/]+/relationships/profiles/?$")),)
PROFILE_QUERY = {"additional-fields[profile]": "subscriptions"}


@dataclass(frozen=True)
class Step:
    name: str
    # What the emulator (and Klaviyo, by its documentation) answers: a status, or the
    # outcome of an action or of one of the bundle's bulk paths.
    expected: int | str
    outside_the_document: bool = False  # sent wrong on purpose


def observe(answer: Response | Observation) -> Observation:
    if isinstance(answer, Observation):
        return answer
    codes = tuple(f"{e.code}@{e.pointer or e.parameter or ''}".rstrip("@") for e in answer.errors)
    return Observation(answer.status, codes, shape(answer))


def shape(response: Response) -> str:
    """A short description of the body's shape: resource types, emptiness, no values."""
    body = response.body
    content_type = response.headers.get("content-type", "")
    if body is None:
        return "html" if "html" in content_type else "empty"
    if not isinstance(body, dict):
        return type(body).__name__
    if "errors" in body:
        return "errors"
    data = body.get("data")
    if isinstance(data, list):
        kinds = sorted({item.get("type", "?") for item in data if isinstance(item, dict)})
        return f"[{'|'.join(kinds)}]" if data else "[]"
    if isinstance(data, dict):
        return str(data.get("type", "?"))
    return "no data"


def scenario(target: Target, deletion: bool = False) -> Iterator[tuple[Step, Observation]]:
    """The fixed scenario; each step may use what earlier steps made.

    The bundle's own modules build the bodies: the actions' (Track Event's ``POST
    /api/events``, the consent jobs of ``/api/profile-subscription-bulk-create-jobs`` and
    ``/api/profile-subscription-bulk-delete-jobs``), the bulk events job's and the import's
    (``/api/profile-bulk-import-jobs``). ``deletion`` adds the Delete Profile action (a
    data-privacy deletion job of one of the run's profiles)."""
    email = f"conformance+{target.tag}@example.com"
    external_id = f"conformance-{target.tag}"
    attributes = {
        "email": email,
        "external_id": external_id,
        "first_name": "Conformance",
        "properties": {"conformance_tag": target.tag},
    }
    create_body = {"data": {"type": "profile", "attributes": attributes}}

    answer = target.send("POST", "/api/profiles", body=create_body, query=PROFILE_QUERY)
    profile_id = None
    if isinstance(answer, Response) and isinstance(answer.data, dict):
        profile_id = answer.data.get("id")
        if profile_id:
            target.created.append(profile_id)
    yield Step("create profile", 201), observe(answer)
    answer = target.send("POST", "/api/profiles", body=create_body, query=PROFILE_QUERY)
    yield Step("create it again (duplicate)", 409), observe(answer)
    for identifier, value in (("email", email), ("external_id", external_id)):
        query = {"filter": f"equals({identifier},{filter_value(value)})", **PROFILE_QUERY}
        query |= {"sort": "-updated", "page[size]": "1"}
        answer = target.send("GET", "/api/profiles", query=query)
        yield Step(f"get by {identifier}", 200), observe(answer)
    pid = profile_id or "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    yield Step("get by id", 200), observe(target.send("GET", f"/api/profiles/{pid}"))

    # The actions, each as its handler runs it, for the scenario's profile (by its email):
    # they start once the search shows it (how long that takes, the search-lag probe says).
    searched = {"filter": f"equals(email,{filter_value(email)})"}
    probes.first_found(target, "/api/profiles", searched, target.clock(), target.clock)
    lead = {"email": email, "klaviyo.custom.conformance_tag": target.tag}
    on_list = {**lead, "klaviyo.list_id": target.list_id}
    yield Step("Get Profiles", "success"), act(target, "get_profiles", lead)
    changed = {**lead, "title": "Checked"}
    yield Step("Update Profile", "success"), act(target, "update_profile", changed)
    # Before the list add: a segment defined by the list would show the member only later.
    in_segment = {**lead, "klaviyo.segment_id": target.segment_id}
    yield Step("Get Segment Profiles", "failure"), act(target, "get_segment_profiles", in_segment)
    yield Step("Add Profile to List", "success"), act(target, "add_profile_to_list", on_list)
    path = f"/api/lists/{target.list_id}/relationships/profiles"
    answer = target.send("GET", path, query={"page[size]": "100"})
    yield Step("list member ids", 200), observe(answer)
    yield (
        Step("Subscribe Profile to List", "success"),
        act(target, "subscribe_profile_to_list", on_list),
    )
    event = {"email": email, "conformance_tag": target.tag, "klaviyo.metric_name": "Conformance"}
    yield Step("Track Event", "success"), act(target, "track_event", event)
    yield Step("bulk events job", "success"), bulk_events(target, event)
    job_ids: list[str] = []
    yield Step("bulk import job", "success"), bulk_import(target, job_ids)
    job_id = job_ids[0] if job_ids else "none"
    answer = target.send("GET", imports.JOBS, query={"sort": "-created_at", "page[size]": "20"})
    yield Step("list import jobs", 200), observe(answer)
    yield Step("read import job", 200), observe(target.send("GET", f"{imports.JOBS}/{job_id}"))
    yield Step("pages of the job's profiles", "success"), pages(target, job_id)
    answer = target.send("GET", f"{imports.JOBS}/{job_id}/import-errors")
    yield Step("read import errors", 200), observe(answer)
    yield Step("search any() of 100 emails", "success"), search_any(target, email)
    query = {"filter": f"equals(email,{filter_value(email)})", "page[size]": "1"}
    answer = target.send("GET", "/api/profiles", query=query)
    yield Step("search one page", 200), observe(answer)
    upserted = new_lead(target, "upsert")
    yield Step("Upsert Profile", "success"), act(target, "upsert_profile", upserted, keep=True)
    made = new_lead(target, "create")
    before = len(target.created)
    yield Step("Create Profile", "success"), act(target, "create_profile", made, keep=True)
    made_ids = target.created[before:]
    remove = act(target, "remove_profile_from_list", on_list)
    yield Step("Remove Profile from List", "success"), remove
    # Back on the list: an unsubscribe job names the list, and leaves it.
    yield Step("Add Profile to List again", "success"), act(target, "add_profile_to_list", on_list)
    yield Step("Unsubscribe Profile", "success"), act(target, "unsubscribe_profile", on_list)
    if deletion:
        deleted = act(target, "delete_profile", {"email": made["email"]}, deletion=True)
        if deleted.status == "success":
            # Its deletion is asked for: the clean-up leaves it be (a list removal that
            # names a profile already gone is refused whole).
            target.created = [pid for pid in target.created if pid not in made_ids]
        yield Step("Delete Profile", "success"), deleted
    for name, bad in (
        ("invalid email", {"email": "not-an-email"}),
        ("invalid phone", {"phone_number": "+1555"}),
    ):
        body = {"data": {"type": "profile", "attributes": bad}}
        yield Step(name, 400), observe(target.send("POST", "/api/profiles", body=body))
    query = {"filter": 'equals(nickname,"x")'}
    answer = target.send("GET", "/api/profiles", query=query)
    yield Step("bad filter", 400, outside_the_document=True), observe(answer)
    honest = target.client
    target.client = KlaviyoClient(
        honest.base_url, honest.revision, lambda force: "pk_not_a_real_key", sleep=honest.sleep
    )
    try:
        yield Step("bad API key", 401), observe(target.send("GET", "/api/profiles"))
    finally:
        target.client = honest


# An action's budget: longer than a steady window, since against a live account the pacer
# holds each window to a fifth of its limit, and a step may wait for the next window.
def context(target: Target, deletion: bool = False, seconds: float = ACTION_SECONDS) -> Context:
    """What a handler gives an action: the target's client, a budget, default settings (and
    deletion allowed when asked). A fresh one per step, so no step reads another's caches."""
    settings = Settings(profile_deletion_enabled=deletion)
    budget = Budget(seconds, clock=target.clock)
    return Context(
        client=target.client,
        budget=budget,
        settings=settings,
        ledger=target.ledger,
        wall=target.clock,
    )


def new_lead(target: Target, suffix: str) -> dict[str, Any]:
    """A lead for a profile the scenario makes, tagged as every profile of the run is."""
    return {
        "email": probes.tagged(target, suffix)["email"],
        "klaviyo.custom.conformance_tag": target.tag,
    }


def act(
    target: Target,
    action: str,
    values: dict[str, Any],
    *,
    deletion: bool = False,
    keep: bool = False,
) -> Observation:
    """Run one of the bundle's actions on a lead: its outcome, the calls it made and its
    reason. ``keep``: the profile it returns is the run's, to clean up."""
    start = len(target.calls)
    lead = Lead.from_object(values)
    result = run_action(ACTIONS[action], context(target, deletion), lead)
    made = (result.profile or {}).get("id")
    if keep and isinstance(made, str):
        target.created.append(made)
    return Observation(result.outcome.value, calls_since(target, start), result.reason or "")


def calls_since(target: Target, start: int) -> tuple[str, ...]:
    """Operation and status of each call from ``start`` on; a repeated poll shows once (how
    often a job is polled depends on how soon it is done)."""
    calls: list[str] = []
    for operation, status in target.calls[start:]:
        call = f"{operation} {status or 'no answer'}"
        if not calls or calls[-1] != call:
            calls.append(call)
    return tuple(calls)


def outcome_of(results: list[Result | None]) -> tuple[str, str]:
    """One outcome for a step of several leads: theirs when they agree, and their reasons."""
    seen = sorted({r.outcome.value if r is not None else "none" for r in results})
    reasons = sorted({r.reason for r in results if r is not None and r.reason})
    return ",".join(seen), "; ".join(reasons)


def bulk_events(target: Target, values: dict[str, Any]) -> Observation:
    """Two events of the scenario's profile in one bulk job, as the batched Track Event
    sends them (a unique id each, so the job does not repeat an event)."""
    start = len(target.calls)
    ctx = context(target)
    items = []
    for n in range(2):
        lead = Lead.from_object({**values, "klaviyo.unique_id": f"{target.tag}-{n}"})
        items.append((n, track_event.prepare(ctx, lead)))
    results: list[Result | None] = [None] * len(items)
    track_event.send_jobs(ctx, items, results)
    outcome, reason = outcome_of(results)
    return Observation(outcome, calls_since(target, start), reason)


def bulk_import(target: Target, job_ids: list[str]) -> Observation:
    """Three tagged profiles through the bundle's import: the job, its polls, its profiles
    (and its import errors when some failed). The job's id goes to ``job_ids``."""
    start = len(target.calls)
    names = [name for name in probes.SCENARIO_PROFILES if name.startswith("import")]
    items = [{"type": "profile", "attributes": probes.tagged(target, name)} for name in names]
    ctx = context(target, seconds=probes.IMPORT_WAIT_SECONDS)
    try:
        imported = imports.run(ctx, items, taken=job_ids.append)
    except Result as stopped:
        return Observation(stopped.outcome.value, calls_since(target, start), stopped.reason or "")
    results: list[Result | None] = []
    for position in range(len(items)):
        found = imports.outcome(imported, position)
        if isinstance(found, Result):
            results.append(found)
        else:
            target.created.append(found["id"])
            results.append(outcomes.success(found))
    outcome, reason = outcome_of(results)
    return Observation(outcome, calls_since(target, start), reason)


def pages(target: Target, job_id: str) -> Observation:
    """The import job's profiles two to a page, through the bundle's pagination (each
    page's next link)."""
    start = len(target.calls)
    path = f"{imports.JOBS}/{job_id}/profiles"
    try:
        profiles = lookup.all_pages(context(target), path, {"page[size]": "2"})
    except Result as stopped:
        return Observation(stopped.outcome.value, calls_since(target, start), stopped.reason or "")
    pages_read = len(target.calls) - start
    shape = f"{len(profiles)} profiles in {pages_read} pages"
    return Observation("success", calls_since(target, start), shape)


def search_any(target: Target, email: str) -> Observation:
    """One any() search of 100 emails (the scenario's and 99 no one has), as a batch of
    leads looks its profiles up."""
    start = len(target.calls)
    emails = [email] + [f"conformance+{target.tag}-absent{i}@example.com" for i in range(99)]
    found = lookup.search(context(target), "email", "-updated", emails)
    if found.problems:
        outcome, reason = outcome_of(list(found.problems.values()))
        return Observation(outcome, calls_since(target, start), reason)
    hits = sum(1 for matches in found.matches.values() if matches)
    return Observation("success", calls_since(target, start), f"{hits} of {len(emails)} found")


def clean_up(target: Target) -> dict[str, Observation]:
    """Take the run's profiles off the scratch list and ask Klaviyo to delete them
    (asynchronous); the deletion answer of each profile."""
    answers = {}
    created = list(dict.fromkeys(target.created))
    path = f"/api/lists/{target.list_id}/relationships/profiles"
    for start in range(0, len(created), 100):
        members = {"data": [{"type": "profile", "id": pid} for pid in created[start : start + 100]]}
        target.send("DELETE", path, body=members)
    for profile_id in created:
        body = {
            "data": {
                "type": "data-privacy-deletion-job",
                "attributes": {
                    "profile": {"data": {"type": "profile", "id": profile_id, "attributes": {}}}
                },
            }
        }
        answer = target.send("POST", "/api/data-privacy-deletion-jobs", body=body)
        answers[profile_id] = observe(answer)
    return answers


def report_deletions(target: Target, answers: dict[str, Observation]) -> None:
    """Say which profiles' deletion Klaviyo did not accept, for someone to delete by hand."""
    refused = [pid for pid, answer in answers.items() if answer.status != 202]
    if refused:
        print(
            f"\nThe deletion of these profiles was not accepted (the key may lack the "
            f"scope); delete them on {target.name} yourself: " + ", ".join(refused)
        )


def run(
    target: Target, sizes: tuple[int, ...] | None = None, deletion: bool = False
) -> tuple[list[tuple[Step, Observation]], list[str], dict[str, Any] | None]:
    """The scenario's observations, the requests outside the document it did not mean, and
    (given import ``sizes``) the probes' calibration; then the clean-up. ``deletion`` adds the
    Delete Profile action to the scenario."""
    observed: list[tuple[Step, Observation]] = []
    unmeant: list[str] = []
    measured = None
    seen = 0
    try:
        for step, observation in scenario(target, deletion):
            violations = target.violations()
            if not step.outside_the_document:
                unmeant += violations[seen:]
            seen = len(violations)
            observed.append((step, observation))
        if sizes is not None:
            measured = run_probes(target, sizes)
            unmeant += target.violations()[seen:]
    finally:
        report_deletions(target, clean_up(target))
    return observed, unmeant, measured


def compare(
    ours: list[tuple[Step, Observation]], theirs: list[tuple[Step, Observation]] | None
) -> tuple[str, int]:
    """The side-by-side table and the number of differences."""
    headers = ["step", "expected", "emulator: status", "codes", "shape"]
    if theirs is not None:
        headers += ["Klaviyo: status", "codes", "shape", ""]
    rows = []
    differences = 0
    for index, (step, mine) in enumerate(ours):
        row = [step.name, str(step.expected), *mine.cells()]
        if theirs is not None:
            other = theirs[index][1]
            differs = other != mine
            differences += differs
            row += [*other.cells(), "DIFFERS" if differs else ""]
        rows.append(row)
    return _table(headers, rows), differences


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return (
            "| " + " | ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=True)) + " |"
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def run_probes(target: Target, sizes: tuple[int, ...] = probes.IMPORT_SIZES) -> dict[str, Any]:
    """Every behaviour probe; the calibration object (a probe that could not run is null,
    its reason under ``notes``)."""
    notes: dict[str, str] = {}
    lags = probes.search_lag(target, target.clock)
    queue, rate, notes["import_timing"] = probes.import_timing(target, target.clock, sizes)
    all_or_nothing, notes["import_all_or_nothing"] = probes.import_all_or_nothing(
        target, target.clock
    )
    matches, notes["import_matches_external_id"] = probes.import_matches_external_id(
        target, target.clock
    )
    segment_lag, notes["segment_lag_seconds"] = probes.segment_lag(target, target.clock)
    windows, notes["rate_limit_windows"] = probes.rate_limit_windows(target, target.clock)
    subscribing, notes["subscribe_rules"] = probes.subscribe_rules(target, target.clock)
    return {
        "search_lag_seconds": lags,
        "segment_lag_seconds": segment_lag,
        "import_queue_seconds": queue,
        "import_profiles_per_second": rate,
        "import_all_or_nothing": all_or_nothing,
        "import_matches_external_id": matches,
        "latency_ms": probes.percentiles(target.latencies),
        "rate_limit_headers": sorted(h.lower() for h in target.limit_headers),
        "rate_limit_windows": windows,
        "subscribe_rules": subscribing,
        "revision": target.client.revision,
        "notes": notes,
    }


def emulator_settings(emulator: KlaviyoEmulator) -> dict[str, Any]:
    """What the emulator's settings (and the limits it reads from the OpenAPI document)
    predict each probe measures."""
    config = emulator.config
    lag = config.search_lag
    windows = {
        "steady_seconds": WINDOW_SECONDS["steady"],
        "remaining_falls_by_one": True,
        "reset_counts_down": True,
        "limit": emulator.rules[probes.WINDOW_PROBE_OPERATION].limits["steady"],
    }
    return {
        "search_lag_seconds": {"email": lag, "phone_number": lag, "external_id": lag},
        "segment_lag_seconds": config.segment_lag,
        "rate_limit_windows": windows,
        "import_queue_seconds": config.import_delay,
        "import_profiles_per_second": config.import_rate,
        "import_all_or_nothing": config.import_all_or_nothing,
        "import_matches_external_id": config.import_external_id_match,
        "subscribe_rules": {
            "apply_seconds": config.subscribe_delay,
            "double_opt_in_pending": True,  # the scratch list is double opt-in, as lists are
            "sms_refused_outside_sending_countries": not config.sms_enabled
            or "GB" not in config.sms_countries,
        },
    }


def probe_table(measured: dict[str, Any], setting: dict[str, Any]) -> tuple[str, list[str]]:
    """Measured value next to the emulator's setting; the keys where they disagree."""
    rows, differ = [], []
    for key, predicted in setting.items():
        probe = probes.Probe(key, measured.get(key), predicted)
        same = probe.agrees()
        differ += [] if same else [key]
        value = json.dumps(probe.value)
        rows.append([key, value, json.dumps(predicted), "same" if same else "DIFFERS"])
    return _table(["probe", "measured", "emulator setting", "verdict"], rows), differ


class ScratchAccount(KlaviyoEmulator):
    """The emulator as the test account a live run is given: a scratch list, and a scratch
    segment defined as "member of the scratch list" (the emulator's list-defined segment:
    every add to and removal from the list moves it, ``segment_lag`` seconds later, which the
    segment lag probe measures on a real account).
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.list_id = self.create_list("Conformance")
        self.segment_id = self.create_segment("Conformance", member_of_list=self.list_id)

    def live_env(self, **more: str) -> dict[str, str]:
        """The environment of a run against this account as if it were a live one."""
        return {
            "KLAVIYO_API_KEY": DEFAULT_API_KEY,
            "KLAVIYO_LIST_ID": self.list_id,
            "KLAVIYO_SEGMENT_ID": self.segment_id,
            "KLAVIYO_BASE_URL": self.base_url,
            **more,
        }


def observed_client(
    base_url: str, revision: str, key: str, calls: list[tuple[str, int | None]], **options: Any
) -> KlaviyoClient:
    """The bundle's client, telling ``calls`` of every call it makes."""
    return KlaviyoClient(
        base_url,
        revision,
        lambda force: key,
        observer=lambda operation, status, seconds: calls.append((operation, status)),
        **options,
    )


def emulator_target(
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    **behaviour: Any,
) -> tuple[Target, ScratchAccount]:
    spec = default_spec_path()
    emulator = ScratchAccount(
        openapi_path=spec if spec.exists() else None, clock=clock, **behaviour
    )
    emulator.start()
    calls: list[tuple[str, int | None]] = []
    pacer = Pacer(clock=clock, wall_clock=clock)
    client = observed_client(
        emulator.base_url, "2026-07-15", DEFAULT_API_KEY, calls, sleep=sleep, pacer=pacer
    )
    target = Target(
        "emulator", client, emulator.list_id, emulator.segment_id, clock=clock, calls=calls
    )
    target.violations = lambda: emulator.contract_violations
    return target, emulator


def klaviyo_target(
    env: dict[str, str],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Target | None:
    key, list_id, segment_id = (
        env.get(name, "").strip()
        for name in ("KLAVIYO_API_KEY", "KLAVIYO_LIST_ID", "KLAVIYO_SEGMENT_ID")
    )
    if not (key and list_id and segment_id):
        return None
    base_url = env.get("KLAVIYO_BASE_URL", "").strip() or KLAVIYO_URL
    revision = env.get("KLAVIYO_API_REVISION") or "2026-07-15"
    # The client's own pacer spends at most a fifth of each window's limit (RateLimit-Limit:
    # deletions 12 a minute of 60), and the run's requests of one operation are 0.25 s apart.
    pacer = Pacer(clock=clock, wall_clock=clock, max_share=0.2)
    calls: list[tuple[str, int | None]] = []
    client = observed_client(base_url, revision, key, calls, sleep=sleep, pacer=pacer)
    return Target("klaviyo", client, list_id, segment_id, clock=clock, spacing=0.25, calls=calls)


def plan(real: Target) -> str:
    return (
        f"Against {real.client.base_url} this run would create, tagged '{real.tag}' (in each "
        f"email's local part and the conformance_tag property): about "
        f"{sum(probes.IMPORT_SIZES) + len(probes.tagged_emails(real.tag, ())) + 1} profiles "
        f"(one by one and in import jobs of {', '.join(map(str, probes.IMPORT_SIZES))}), "
        f"three events, subscribe jobs (on list {real.list_id}; a historical one; one with SMS "
        f"for Ofcom's drama number {probes.UK_DRAMA_NUMBER}, which no one holds) and an "
        f"unsubscribe job, reads of "
        f"segment {real.segment_id} (defined as member of that list); then it removes its "
        "profiles from the list and requests their deletion. Set CONFIRM=1 to run."
    )


def main(
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    **behaviour: Any,
) -> int:
    """``clock`` and ``sleep`` are the time both targets run on (tests: the emulators' fake
    clock); ``behaviour`` configures the emulator."""
    parser = argparse.ArgumentParser(prog="python -m devtools.conformance", description=__doc__)
    parser.add_argument(
        "--import-sizes",
        default=",".join(map(str, probes.IMPORT_SIZES)),
        help="profiles per timed import job, comma-separated",
    )
    parser.add_argument(
        "--deletion",
        action="store_true",
        help="run Delete Profile too, as a step of the table (every run's clean-up requests "
        "the deletion of its profiles either way)",
    )
    parser.add_argument(
        "--cleanup",
        metavar="TAG",
        help="finish an interrupted run: take its profiles off the list and request deletion",
    )
    args = parser.parse_args(argv)
    sizes = tuple(int(n) for n in args.import_sizes.split(",") if n)
    env = dict(os.environ) if env is None else env
    real = klaviyo_target(env, sleep or time.sleep, clock or time.time)
    if args.cleanup:
        if real is None:
            print("--cleanup needs KLAVIYO_API_KEY, KLAVIYO_LIST_ID and KLAVIYO_SEGMENT_ID.")
            return 2
        real.tag = args.cleanup
        try:
            real.created = probes.find_tagged(real, sizes)
        except probes.SearchFailed as failed:
            print(f"Nothing cleaned up: {failed}. Run --cleanup {real.tag} again.")
            return 1
        print(f"{len(real.created)} profile(s) tagged {real.tag}: " + ", ".join(real.created))
        if real.created and env.get("CONFIRM") == "1":
            answers = clean_up(real)
            print(f"Removal from list {real.list_id} and deletion requested for {len(answers)}.")
            report_deletions(real, answers)
        elif real.created:
            print("Set CONFIRM=1 to remove them from the list and request their deletion.")
        return 0
    if real is not None and env.get("CONFIRM") != "1":
        print(plan(real))
        return 0
    target, emulator = emulator_target(
        sleep=sleep or time.sleep, clock=clock or time.time, **behaviour
    )
    try:
        ours, violations, mine = run(target, sizes, args.deletion)
        setting = emulator_settings(emulator)
    finally:
        emulator.stop()
    theirs, measured = None, mine
    if real is not None:
        print(f"Run tag: {real.tag} (finish an interrupted run with --cleanup {real.tag}).")
        theirs, _, measured = run(real, sizes, args.deletion)
    assert measured is not None
    table, differences = compare(ours, theirs)
    print(table)
    probed, disagree = probe_table(measured, setting)
    print("\n" + probed)
    out = Path(env.get("OUT") or ".") / "conformance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
    print(f"\nCalibration written to {out}.")
    unexpected = [step.name for step, seen in ours if seen.status != step.expected]
    if violations:
        print("\nRequests outside Klaviyo's OpenAPI document:\n  " + "\n  ".join(violations))
    if real is None:
        print(
            "\nKlaviyo: skipped. Set KLAVIYO_API_KEY, KLAVIYO_LIST_ID and KLAVIYO_SEGMENT_ID "
            "(a test account's scratch list and segment) to compare."
        )
    else:
        print(f"\n{differences} difference(s) between the emulator and Klaviyo.")
    if unexpected:
        print("\nThe emulator did not answer as expected: " + ", ".join(unexpected))
    if disagree:
        print("\nProbes that differ from the emulator's settings: " + ", ".join(disagree))
    return 1 if unexpected or violations or differences or disagree else 0


if __name__ == "__main__":
    sys.exit(main())

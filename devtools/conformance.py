"""Conformance: one fixed scenario against the emulator and, when given, a real Klaviyo account.

    make conformance
    KLAVIYO_API_KEY=pk_... KLAVIYO_LIST_ID=... KLAVIYO_SEGMENT_ID=... make conformance

The scenario sends the requests the bundle sends (through its own client: same headers,
revision, filters and bodies) and prints a side-by-side table of status codes, error codes and
response shapes, marking every difference. Run it against a test account before going live:
it shows where Klaviyo answers differently from the emulator the tests trust.

Against Klaviyo it touches only the profile it creates (a unique, tagged email address) and
requests that profile's deletion at the end (Klaviyo's data-privacy deletion job). The list
and segment should be scratch ones: the profile joins the list and is subscribed to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from devtools import conformance_probes as probes  # noqa: E402
from klaviyo_leads.budget import Budget  # noqa: E402
from klaviyo_leads.klaviyo import (  # noqa: E402
    KlaviyoClient,
    Pacer,
    Response,
    filter_value,
    operation_of,
)
from klaviyo_leads.outcomes import Result  # noqa: E402

KLAVIYO_URL = "https://a.klaviyo.com"
EVERY_STATUS = tuple(range(100, 600))
PROFILE_QUERY = {"additional-fields[profile]": "subscriptions"}


@dataclass(frozen=True)
class Observation:
    """What a target answered to one step, reduced to what should match across targets."""

    status: int | None
    codes: tuple[str, ...] = ()
    shape: str = ""

    def cells(self) -> list[str]:
        return [str(self.status or "-"), ",".join(self.codes) or "-", self.shape or "-"]


@dataclass
class Target:
    """Where a scenario runs: a Klaviyo (or the emulator), a scratch list and segment."""

    name: str
    client: KlaviyoClient
    list_id: str
    segment_id: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    created: list[str] = field(default_factory=list)
    # The emulator's contract check: requests outside Klaviyo's OpenAPI document.
    violations: Callable[[], list[str]] = list
    clock: Callable[[], float] = time.time
    # Seconds each answer took, per operation; the rate-limit headers answers carried.
    latencies: dict[str, list[float]] = field(default_factory=dict)
    limit_headers: set[str] = field(default_factory=set)
    # Against a live account: at least this long between two calls of one operation, so the
    # run stays a small share of every limit (the smallest steady one, deletion's, included).
    spacing: float = 0.0
    last_sent: dict[str, float] = field(default_factory=dict)

    def send(self, method: str, path: str, **kwargs: Any) -> Response | Observation:
        operation = re.sub(
            r"/[A-Za-z0-9]*[0-9][A-Za-z0-9]{5,}(?=/|$)", "/{id}", operation_of(method, path)
        )
        if self.spacing:
            gap = self.spacing * (8 if operation == "request_profile_deletion" else 1)
            wait = self.last_sent.get(operation, -gap) + gap - self.clock()
            if wait > 0:
                self.client.sleep(wait)
            self.last_sent[operation] = self.clock()
        started = self.clock()
        try:
            # Against a live account the pacer keeps each operation's bucket within its
            # published limits; the emulator (limits counted, not enforced) is not held back.
            bucket = f"conformance {operation}" if self.spacing else f"conformance {uuid.uuid4()}"
            answer = self.client.call(
                method, path, Budget(30), bucket=bucket, handled=EVERY_STATUS, **kwargs
            )
        except Result as problem:  # no answer at all: a connection or a timeout
            return Observation(None, (), problem.reason or "no answer")
        self.latencies.setdefault(operation, []).append(self.clock() - started)
        self.limit_headers |= {h for h in answer.headers if h.lower() in probes.RATE_LIMIT_HEADERS}
        return answer


@dataclass(frozen=True)
class Step:
    name: str
    expected: int  # what the emulator (and Klaviyo, by its documentation) answers
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


def scenario(target: Target) -> Iterator[tuple[Step, Observation]]:
    """The fixed scenario; each step may use what earlier steps made."""
    email = f"conformance+{target.tag}@example.com"
    external_id = f"conformance-{target.tag}"
    attributes = {"email": email, "external_id": external_id, "first_name": "Conformance"}
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
    patch = {"data": {"type": "profile", "id": pid, "attributes": {"title": "Checked"}}}
    answer = target.send("PATCH", f"/api/profiles/{pid}", body=patch, query=PROFILE_QUERY)
    yield Step("update", 200), observe(answer)
    members = {"data": [{"type": "profile", "id": pid}]}
    path = f"/api/lists/{target.list_id}/relationships/profiles"
    yield Step("add to list", 204), observe(target.send("POST", path, body=members))
    query = {"filter": f"any(profile_id,[{filter_value(pid)}])", "page[size]": "100"}
    path = f"/api/segments/{target.segment_id}/profiles"
    yield Step("segment check", 200), observe(target.send("GET", path, query=query))
    job = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": email,
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}}
                                },
                            },
                        }
                    ]
                },
                "historical_import": False,
            },
            "relationships": {"list": {"data": {"type": "list", "id": target.list_id}}},
        }
    }
    answer = target.send("POST", "/api/profile-subscription-bulk-create-jobs", body=job)
    yield Step("subscribe email", 202), observe(answer)
    emails = [email] + [f"conformance+{target.tag}-absent{i}@example.com" for i in range(99)]
    values = ",".join(filter_value(e) for e in emails)
    query = {"filter": f"any(email,[{values}])", "page[size]": "100"}
    yield (
        Step("search any() of 100 emails", 200),
        observe(target.send("GET", "/api/profiles", query=query)),
    )
    query = {"filter": f"equals(email,{filter_value(email)})", "page[size]": "1"}
    answer = target.send("GET", "/api/profiles", query=query)
    yield Step("search one page", 200), observe(answer)
    event = {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {"conformance_tag": target.tag},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Conformance"}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
            },
        }
    }
    yield Step("track event", 202), observe(target.send("POST", "/api/events", body=event))
    imported = {"type": "profile", "attributes": probes.tagged(target, "scenario")}
    answer = probes.import_job(target, [imported])
    job_id = answer.data.get("id") if isinstance(answer, Response) and answer.data else "none"
    yield Step("bulk import job", 202), observe(answer)
    answer = target.send("GET", f"{probes.IMPORT_JOBS}/{job_id}")
    yield Step("read import job", 200), observe(answer)
    probes.wait_for_job(target, job_id, target.clock)
    target.created += probes.job_profile_ids(target, job_id)
    answer = target.send("GET", f"{probes.IMPORT_JOBS}/{job_id}/import-errors")
    yield Step("read import errors", 200), observe(answer)
    leaving = {
        "data": {
            "type": "profile-subscription-bulk-delete-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": email,
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "UNSUBSCRIBED"}}
                                },
                            },
                        }
                    ]
                }
            },
            "relationships": {"list": {"data": {"type": "list", "id": target.list_id}}},
        }
    }
    answer = target.send("POST", "/api/profile-subscription-bulk-delete-jobs", body=leaving)
    yield Step("unsubscribe email", 202), observe(answer)
    path = f"/api/lists/{target.list_id}/relationships/profiles"
    yield Step("remove from list", 204), observe(target.send("DELETE", path, body=members))
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


def clean_up(target: Target) -> list[Observation]:
    """Take the run's profiles off the scratch list and ask Klaviyo to delete them
    (asynchronous); the deletion answers, one per profile."""
    answers = []
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
        answers.append(observe(target.send("POST", "/api/data-privacy-deletion-jobs", body=body)))
    return answers


def run(
    target: Target, sizes: tuple[int, ...] | None = None, deletion: bool = False
) -> tuple[list[tuple[Step, Observation]], list[str], dict[str, Any] | None]:
    """The scenario's observations, the requests outside the document it did not mean, and
    (given import ``sizes``) the probes' calibration; then the clean-up. ``deletion`` adds the
    deletion job of the scenario's first profile as a step of its own."""
    observed: list[tuple[Step, Observation]] = []
    unmeant: list[str] = []
    measured = None
    seen = 0
    try:
        for step, observation in scenario(target):
            violations = target.violations()
            if not step.outside_the_document:
                unmeant += violations[seen:]
            seen = len(violations)
            observed.append((step, observation))
        if sizes is not None:
            measured = run_probes(target, sizes)
            unmeant += target.violations()[seen:]
    finally:
        answers = clean_up(target)
        refused = [
            pid
            for pid, seen_ in zip(target.created, answers, strict=False)
            if seen_.status in (401, 403)
        ]
        if refused:
            print(
                f"\nThe key may not delete profiles; delete these on {target.name} yourself: "
                + ", ".join(refused)
            )
    if deletion and answers:
        observed.append((Step("deletion job", 202), answers[0]))
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
    notes["segment_lag_seconds"] = (
        "not probed: needs a segment whose definition a new profile meets"
    )
    return {
        "search_lag_seconds": lags,
        "segment_lag_seconds": None,
        "import_queue_seconds": queue,
        "import_profiles_per_second": rate,
        "import_all_or_nothing": all_or_nothing,
        "import_matches_external_id": matches,
        "latency_ms": probes.percentiles(target.latencies),
        "rate_limit_headers": sorted(h.lower() for h in target.limit_headers),
        "revision": target.client.revision,
        "notes": notes,
    }


def emulator_settings(config: Any) -> dict[str, Any]:
    """What the emulator's settings predict each probe measures."""
    lag = config.search_lag
    return {
        "search_lag_seconds": {"email": lag, "phone_number": lag, "external_id": lag},
        "import_queue_seconds": config.import_delay,
        "import_profiles_per_second": config.import_rate,
        "import_all_or_nothing": config.import_all_or_nothing,
        "import_matches_external_id": config.import_external_id_match,
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


def emulator_target(
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    **behaviour: Any,
) -> tuple[Target, Any]:
    from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator
    from devtools.klaviyo_emulator.contract import default_spec_path

    spec = default_spec_path()
    emulator = KlaviyoEmulator(
        openapi_path=spec if spec.exists() else None, clock=clock, **behaviour
    ).start()
    list_id = emulator.create_list("Conformance")
    segment_id = emulator.create_segment("Conformance")
    client = KlaviyoClient(emulator.base_url, "2026-07-15", lambda f: DEFAULT_API_KEY, sleep=sleep)
    target = Target("emulator", client, list_id, segment_id, clock=clock)
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
    # The client's own pacer, held to a fifth of every limit it learns from the headers.
    pacer = Pacer(clock=clock, wall_clock=clock, max_share=0.2)
    client = KlaviyoClient(base_url, revision, lambda f: key, sleep=sleep, pacer=pacer)
    # 0.25 s apart: 4/s per operation, deletions 0.5/s (30/m), a share of every published limit.
    return Target("klaviyo", client, list_id, segment_id, clock=clock, spacing=0.25)


def plan(real: Target) -> str:
    return (
        f"Against {real.client.base_url} this run would create, tagged '{real.tag}' (in each "
        f"email's local part and the conformance_tag property): about "
        f"{sum(probes.IMPORT_SIZES) + 12} profiles (one by one and in import jobs of "
        f"{', '.join(map(str, probes.IMPORT_SIZES))}), one event, a subscribe and an "
        f"unsubscribe job on list {real.list_id}, reads of segment {real.segment_id}; then it "
        "removes its profiles from the list and requests their deletion. Set CONFIRM=1 to run."
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
        "--deletion", action="store_true", help="show the deletion job as a step of the table"
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
        real.created = probes.find_tagged(real, sizes)
        print(f"{len(real.created)} profile(s) tagged {real.tag}: " + ", ".join(real.created))
        if real.created and env.get("CONFIRM") == "1":
            clean_up(real)
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
        setting = emulator_settings(emulator.config)
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

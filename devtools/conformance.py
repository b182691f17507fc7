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
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from devtools.lambda_events import ensure_layer_on_path

ensure_layer_on_path()

from klaviyo_leads.budget import Budget  # noqa: E402
from klaviyo_leads.klaviyo import KlaviyoClient, Response, filter_value  # noqa: E402
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

    def send(self, method: str, path: str, **kwargs: Any) -> Response | Observation:
        try:
            # One call per step: each step its own bucket, so the pacer never holds one back.
            bucket = f"conformance {method} {path}"
            return self.client.call(
                method, path, Budget(30), bucket=bucket, handled=EVERY_STATUS, **kwargs
            )
        except Result as problem:  # no answer at all: a connection or a timeout
            return Observation(None, (), problem.reason or "no answer")


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
    """Ask Klaviyo to delete every profile the scenario made (asynchronous)."""
    answers = []
    for profile_id in target.created:
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


def run(target: Target) -> tuple[list[tuple[Step, Observation]], list[str]]:
    """The scenario's observations, and the requests outside the document it did not mean."""
    observed: list[tuple[Step, Observation]] = []
    unmeant: list[str] = []
    seen = 0
    try:
        for step, observation in scenario(target):
            violations = target.violations()
            if not step.outside_the_document:
                unmeant += violations[seen:]
            seen = len(violations)
            observed.append((step, observation))
    finally:
        clean_up(target)
    return observed, unmeant


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


def emulator_target(sleep: Callable[[float], None] = time.sleep) -> tuple[Target, Any]:
    from devtools.klaviyo_emulator import DEFAULT_API_KEY, KlaviyoEmulator
    from devtools.klaviyo_emulator.contract import default_spec_path

    spec = default_spec_path()
    emulator = KlaviyoEmulator(openapi_path=spec if spec.exists() else None).start()
    list_id = emulator.create_list("Conformance")
    segment_id = emulator.create_segment("Conformance")
    client = KlaviyoClient(emulator.base_url, "2026-07-15", lambda f: DEFAULT_API_KEY, sleep=sleep)
    target = Target("emulator", client, list_id, segment_id)
    target.violations = lambda: emulator.contract_violations
    return target, emulator


def klaviyo_target(env: dict[str, str]) -> Target | None:
    key, list_id, segment_id = (
        env.get(name, "").strip()
        for name in ("KLAVIYO_API_KEY", "KLAVIYO_LIST_ID", "KLAVIYO_SEGMENT_ID")
    )
    if not (key and list_id and segment_id):
        return None
    base_url = env.get("KLAVIYO_BASE_URL", "").strip() or KLAVIYO_URL
    client = KlaviyoClient(base_url, env.get("KLAVIYO_API_REVISION") or "2026-07-15", lambda f: key)
    return Target("klaviyo", client, list_id, segment_id)


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.conformance", description=__doc__)
    parser.parse_args(argv)
    env = dict(os.environ) if env is None else env
    target, emulator = emulator_target()
    try:
        ours, violations = run(target)
    finally:
        emulator.stop()
    real = klaviyo_target(env)
    theirs = run(real)[0] if real is not None else None
    table, differences = compare(ours, theirs)
    print(table)
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
    return 1 if unexpected or violations or differences else 0


if __name__ == "__main__":
    sys.exit(main())

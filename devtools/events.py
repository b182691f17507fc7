"""The sample events in ``events/``, generated from one sample lead per action.

    python -m devtools.events            # rewrite events/ from the leads below
    python -m devtools.events --check    # exit 1 if events/ differs from what would be written

Every action gets the same set of files (see ``FILES``), each a complete event of one trigger
of the contract, built by ``devtools.lambda_events`` with fixed ids and times so that the output
is stable. The leads use the demo ids (list ``Y6nRLr`` "Newsletter", segment ``VIPseg``
"VIP customers", as ``python -m devtools.klaviyo_emulator --seed-demo`` creates them) and
obviously fake people: example.com addresses, 555-01xx phone numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from devtools import lambda_events as le

EVENTS_DIR = le.ROOT / "events"
DEMO_LIST_ID = "Y6nRLr"
DEMO_SEGMENT_ID = "VIPseg"
LEAD_SOURCE = "com.example.lead-platform"  # the EventBridge source of the sample lead events
USER_AGENT = "LeadPlatform-Webhooks/2.4"
# 2026-03-02T15:04:05Z: every sample event happened then.
SAMPLE_TIME = datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC).timestamp()

# The profile the demo seeds (in segment VIPseg); the get/update/add samples look it up.
DEMO_PROFILE = {
    "email": "dana.whitfield@example.com",
    "phone_number": "+15125550142",
    "external_id": "crm-10042",
    "first_name": "Dana",
    "last_name": "Whitfield",
    "organization": "Fabrikam Outfitters",
    "title": "Marketing Director",
}

# Per action: the sample lead (first) and a second lead for the batch events. Nested objects
# and dotted keys both appear, and phone numbers come in different US shapes.
SAMPLE_LEADS: dict[str, list[dict[str, Any]]] = {
    "create_profile": [
        {
            "email": "marcus.lee@example.com",
            "phone_1": "+1 (737) 555-0118",
            "reference": "crm-20318",
            "first_name": "Marcus",
            "last_name": "Lee",
            "title": "Operations Manager",
            "company": {"name": "Northwind Traders"},
            "address_1": "1200 Congress Ave",
            "address_2": "Suite 410",
            "city": "Austin",
            "state": "TX",
            "postal_code": "78701",
            "country": "United States",
            "latitude": 30.2747,
            "longitude": -97.7404,
            "klaviyo": {
                "timezone": "America/Chicago",
                "custom": {"lead_source": "webinar", "lead_score": 72},
            },
        },
        {
            "email": "priya.raman@example.com",
            "phone_1": "206-555-0177",
            "reference": "crm-20319",
            "first_name": "Priya",
            "last_name": "Raman",
            "company.name": "Contoso Ltd",
            "city": "Seattle",
            "state": "WA",
            "klaviyo.custom.lead_source": "trade show",
        },
    ],
    "get_profiles": [
        {
            "email": DEMO_PROFILE["email"],
            "klaviyo": {"profile_handling": "newest update date"},
        },
        {
            "phone_1": "512.555.0142",
            "klaviyo.identifier": "phone_number",
        },
    ],
    "get_segment_profiles": [
        {
            "email": DEMO_PROFILE["email"],
            "klaviyo": {"segment_id": DEMO_SEGMENT_ID},
        },
        {
            "email": "priya.raman@example.com",
            "klaviyo.segment_id": DEMO_SEGMENT_ID,
        },
    ],
    "update_profile": [
        {
            "email": DEMO_PROFILE["email"],
            "title": "VP of Growth",
            "company": {"name": "Fabrikam Outfitters"},
            "city": "Round Rock",
            "state": "TX",
            "klaviyo": {"custom": {"lead_score": 91}},
        },
        {
            "reference": DEMO_PROFILE["external_id"],
            "klaviyo.identifier": "external_id",
            "postal_code": "78664",
            "klaviyo.custom.preferred_contact": "email",
        },
    ],
    "add_profile_to_list": [
        {
            "email": DEMO_PROFILE["email"],
            "klaviyo": {"list_id": DEMO_LIST_ID},
        },
        {
            "phone_1": "(206) 555-0177",
            "klaviyo.identifier": "phone_number",
            "klaviyo.list_id": DEMO_LIST_ID,
        },
    ],
    "subscribe_profile_to_list": [
        {
            "email": "marcus.lee@example.com",
            "phone_1": "737 555 0118",
            "klaviyo": {
                "list_id": DEMO_LIST_ID,
                "channels": "email,sms",
                "custom_source": "Webinar registration form",
            },
        },
        {
            "email": "olivia.chen@example.com",
            "klaviyo.list_id": DEMO_LIST_ID,
            "klaviyo.channels": ["email"],
        },
    ],
    "unsubscribe_profile": [
        {
            "email": DEMO_PROFILE["email"],
            "klaviyo": {"list_id": DEMO_LIST_ID, "channels": "email"},
        },
        {
            "email": "olivia.chen@example.com",
            "phone_1": "(425) 555-0163",
        },
    ],
    "remove_profile_from_list": [
        {
            "email": DEMO_PROFILE["email"],
            "klaviyo": {"list_id": DEMO_LIST_ID},
        },
        {
            "reference": DEMO_PROFILE["external_id"],
            "klaviyo.list_id": DEMO_LIST_ID,
        },
    ],
    "upsert_profile": [
        {
            "email": DEMO_PROFILE["email"],
            "title": "Head of Partnerships",
            "klaviyo": {"custom": {"lead_score": 88}},
        },
        {
            "email": "jonas.berg@example.com",
            "first_name": "Jonas",
            "last_name": "Berg",
            "company.name": "Tailspin Toys",
        },
    ],
    "track_event": [
        {
            "id": "lead-88123",
            "email": DEMO_PROFILE["email"],
            "first_name": "Dana",
            "campaign": "Spring webinar",
            "klaviyo": {"metric_name": "Lead Received", "event_value": 250},
        },
        {
            "id": "lead-88124",
            "email": "priya.raman@example.com",
            "campaign": "Trade show",
            "klaviyo.metric_name": "Lead Received",
        },
    ],
    "delete_profile": [
        {"email": "jonas.berg@example.com"},
        {"klaviyo.id": "01J0DEMO0NOPROFILE00000000"},
    ],
}

FILES = {
    "api-rest.json": "API Gateway REST API, Lambda proxy (payload v1), JSON body",
    "api-http.json": "API Gateway HTTP API (payload v2), JSON body",
    "api-form.json": "API Gateway REST API (payload v1), `application/x-www-form-urlencoded` body",
    "sqs.json": "SQS event source mapping: two records, one lead each",
    "eventbridge.json": "EventBridge rule: detail-type `<action> lead`, `detail` is the lead",
    "eventbridge-batch.json": 'EventBridge rule: `detail` is `{"leads": [...]}`',
    "direct.json": "Direct invocation (Step Functions, Scheduler, `aws lambda invoke`): the lead",
    "direct-batch.json": 'Direct invocation with several leads: `{"leads": [...]}`',
}


def function_id(action: str) -> str:
    """template.yaml's logical id of an action's function (``CreateProfileFunction``)."""
    return "".join(part.title() for part in action.split("_")) + "Function"


def _id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "klaviyo-lead-actions/events/" + "/".join(parts)))


def form_fields(lead: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """A lead as form fields: nested objects become dotted keys, lists comma-separated."""
    pairs: list[tuple[str, str]] = []
    for key, value in lead.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            pairs.extend(form_fields(value, f"{name}."))
        elif isinstance(value, list):
            pairs.append((name, ",".join(str(v) for v in value)))
        else:
            pairs.append((name, str(value)))
    return pairs


def route(action: str) -> str:
    le.ensure_layer_on_path()
    from klaviyo_leads.actions.table import ACTIONS

    return ACTIONS[action].route


def api_headers(content_type: str) -> dict[str, str]:
    return {
        "Accept": "application/json",
        "Content-Type": content_type,
        "User-Agent": USER_AGENT,
    }


def events_for(action: str) -> dict[str, Any]:
    """The sample events of one action, by file name."""
    lead, second = SAMPLE_LEADS[action]
    path = route(action)
    body = json.dumps(lead)
    bodies = [json.dumps(item) for item in (lead, second)]
    rule_suffix = uuid.UUID(_id(action, "rule")).hex[:12].upper()
    rule_arn = (
        f"arn:aws:events:{le.REGION}:{le.ACCOUNT_ID}:rule/{le.STACK_NAME}/"
        f"{le.STACK_NAME}-{function_id(action)}Lead-{rule_suffix}"
    )
    # CloudFormation names the queue <stack>-<logical id>-<random suffix>.
    suffix = uuid.UUID(_id(action, "queue")).hex[:12].upper()
    queue = le.queue_arn(
        f"{le.STACK_NAME}-{function_id(action).removesuffix('Function')}Queue-{suffix}"
    )
    return {
        "api-rest.json": le.api_gateway_event(
            "POST",
            path,
            api_headers("application/json"),
            body,
            request_id=_id(action, "api-rest"),
            now=SAMPLE_TIME,
            source_ip="198.51.100.24",
        ),
        "api-http.json": le.http_api_event(
            "POST",
            path,
            api_headers("application/json"),
            body,
            request_id=_id(action, "api-http"),
            now=SAMPLE_TIME,
            source_ip="198.51.100.24",
        ),
        "api-form.json": le.api_gateway_event(
            "POST",
            path,
            api_headers("application/x-www-form-urlencoded"),
            urlencode(form_fields(lead)),
            request_id=_id(action, "api-form"),
            now=SAMPLE_TIME,
            source_ip="198.51.100.24",
        ),
        "sqs.json": le.sqs_event(
            [
                # The first came through the API's asynchronous route, which tags the message
                # with the API request id; the second was sent to the queue directly.
                le.sqs_message(
                    bodies[0],
                    message_id=_id(action, "sqs", "1"),
                    sent_timestamp=SAMPLE_TIME,
                    message_attributes={"api_request_id": _id(action, "sqs", "1", "request")},
                ),
                le.sqs_message(
                    bodies[1],
                    message_id=_id(action, "sqs", "2"),
                    sent_timestamp=SAMPLE_TIME + 0.25,
                ),
            ],
            queue,
        ),
        "eventbridge.json": le.eventbridge_event(
            f"{action} lead",
            lead,
            source=LEAD_SOURCE,
            event_id=_id(action, "eventbridge"),
            now=SAMPLE_TIME,
            rule_arn=rule_arn,
        ),
        "eventbridge-batch.json": le.eventbridge_event(
            f"{action} lead",
            {"leads": [lead, second]},
            source=LEAD_SOURCE,
            event_id=_id(action, "eventbridge-batch"),
            now=SAMPLE_TIME,
            rule_arn=rule_arn,
        ),
        "direct.json": lead,
        "direct-batch.json": {"leads": [lead, second]},
    }


def readme() -> str:
    lines = [
        "# Sample events",
        "",
        "Generated by `python -m devtools.events` from the sample leads in `devtools/events.py`;",
        "do not edit by hand (`tests/integration/test_events_fresh.py` fails when these files",
        "and the generator disagree). Regenerate after changing a lead or an event builder.",
        "",
        "One directory per action, each with the same files, one per trigger of the contract:",
        "",
        "| File | Trigger |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {text} |" for name, text in FILES.items()]
    lines += [
        "",
        "| Action | Route | Sample lead |",
        "|---|---|---|",
    ]
    notes = {
        "create_profile": "a new person, nested `company` and `klaviyo` objects",
        "get_profiles": "the demo profile by email; the second by phone number",
        "get_segment_profiles": "the demo profile in segment `VIPseg`; the second is not in it",
        "update_profile": "the demo profile by email; the second by external id",
        "add_profile_to_list": "the demo profile into list `Y6nRLr`; the second by phone",
        "subscribe_profile_to_list": "email and SMS consent through list `Y6nRLr`",
        "unsubscribe_profile": "the demo profile's email from list `Y6nRLr`; the second everywhere",
        "remove_profile_from_list": "the demo profile off list `Y6nRLr`; the second by external id",
        "upsert_profile": "the demo profile updated; the second created",
        "track_event": "a `Lead Received` event on the demo profile, keyed by the lead's id",
        "delete_profile": "a deletion request (off unless the stack allows it)",
    }
    for action in SAMPLE_LEADS:
        lines.append(f"| `{action}/` | `POST {route(action)}` | {notes[action]} |")
    lines += [
        "",
        'The leads expect the demo data: list `Y6nRLr` ("Newsletter"), segment `VIPseg`',
        '("VIP customers") and the profile of `dana.whitfield@example.com` (external id',
        "`crm-10042`, phone 512-555-0142) in that segment. `python -m devtools.runner demo`",
        "creates all of it in the local Klaviyo emulator and runs every sample lead; the batch",
        "samples also refer to people the first samples create (run `create_profile` first).",
        "All people are fictional: example.com addresses, 555-01xx phone numbers.",
        "",
        "Running an event:",
        "",
        "```sh",
        "# in process, against the emulator (seeded with the demo data) and moto:",
        "# no Docker, no AWS account",
        "python -m devtools.runner invoke create_profile events/create_profile/api-rest.json",
        "",
        "# in the Lambda container, with AWS SAM (Docker); the stack's env vars must be set",
        "sam local invoke CreateProfileFunction -e events/create_profile/api-rest.json",
        "```",
        "",
    ]
    return "\n".join(lines)


def render(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """Every file of ``events/``: relative path -> content."""
    files: dict[str, str] = {"README.md": readme()}
    for action in SAMPLE_LEADS:
        for name, event in events_for(action).items():
            files[f"{action}/{name}"] = render(event)
    return files


def differences(directory: Path = EVENTS_DIR) -> list[str]:
    """Files that are missing, stale or not generated (relative paths)."""
    expected = generate()
    found = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()} - {
        ".gitkeep"
    }
    stale = [
        name
        for name, content in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != content
    ]
    return sorted(stale + sorted(found - set(expected)))


def write(directory: Path = EVENTS_DIR) -> list[str]:
    """Write the generated files; returns the relative paths that changed."""
    changed = []
    for name, content in generate().items():
        target = directory / name
        if target.is_file() and target.read_text("utf-8") == content:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, "utf-8")
        changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.events", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report differences")
    parser.add_argument("--dir", type=Path, default=EVENTS_DIR, help="target (default events/)")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences(args.dir)
        for name in stale:
            print(f"out of date: {name}")
        return 1 if stale else 0
    changed = write(args.dir)
    print(f"{len(changed)} file(s) written" + "".join(f"\n  {name}" for name in changed))
    extra = [name for name in differences(args.dir)]
    for name in extra:
        print(f"not generated (remove it?): {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

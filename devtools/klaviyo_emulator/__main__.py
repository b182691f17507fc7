"""Serve the emulator standalone: ``python -m devtools.klaviyo_emulator --port 8765``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from . import calibration
from .config import EVENT_LIMIT_CHOICES, LIST_ADD_CHOICES, OPT_IN_CHOICES, UNSUBSCRIBE_SCOPES
from .emulator import DEFAULT_API_KEY, DEFAULT_REVISION, KlaviyoEmulator
from .latency import PROFILES
from .spec_rules import default_spec_path

DEMO_LIST_ID = "Y6nRLr"
DEMO_SEGMENT_ID = "VIPseg"


def seed_demo(emulator: KlaviyoEmulator) -> dict[str, object]:
    """A list, a segment and two profiles (one of them in the segment and on the list)."""
    list_id = emulator.create_list("Newsletter", list_id=DEMO_LIST_ID)
    segment_id = emulator.create_segment("VIP customers", segment_id=DEMO_SEGMENT_ID)
    sarah = emulator.create_profile(
        email="sarah.mason@klaviyo-demo.com",
        phone_number="+15005550006",
        external_id="crm-1001",
        first_name="Sarah",
        last_name="Mason",
        location={"city": "New York", "region": "NY", "country": "US"},
        properties={"lead_source": "demo"},
    )
    sam = emulator.create_profile(email="sam.lee@klaviyo-demo.com", first_name="Sam")
    emulator.add_to_segment(segment_id, sarah)
    emulator.add_to_list(list_id, sarah)
    return {"list": list_id, "segment": segment_id, "profiles": [sarah, sam]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.klaviyo_emulator",
        description="Local emulator of Klaviyo's REST API (revision 2026-07-15).",
    )
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0 = any)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted private key with all scopes (repeatable; default {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--rate-limits", action="store_true", help="refuse over-limit requests with 429"
    )
    parser.add_argument("--revision", default=DEFAULT_REVISION, help="newest revision accepted")
    parser.add_argument("--seed-demo", action="store_true", help="create a demo list/segment")
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and random faults")
    for name, what in (
        ("subscribe-delay", "seconds before subscribe jobs apply"),
        ("unsubscribe-delay", "seconds before unsubscribe jobs apply"),
        ("deletion-delay", "seconds before deletion jobs apply"),
        ("import-delay", "seconds before a bulk import job starts"),
        ("import-rate", "profiles per second a bulk import job processes (0 = all at once)"),
        ("event-delay", "seconds before events are recorded"),
        ("search-lag", "seconds before a written profile shows in filtered search"),
        ("segment-lag", "seconds before segment membership follows a change"),
    ):
        parser.add_argument(f"--{name}", type=float, default=0.0, help=what)
    parser.add_argument(
        "--latency",
        choices=("off", *PROFILES),
        default="off",
        help="answer with Klaviyo-like latency (drawn per operation, repeatable with --seed)",
    )
    parser.add_argument(
        "--default-opt-in",
        choices=OPT_IN_CHOICES,
        default="double",
        help="account opt-in for subscribe jobs without a list",
    )
    parser.add_argument(
        "--sms-countries",
        default="US",
        metavar="CODES",
        help="comma-separated region codes the account can text (default US)",
    )
    parser.add_argument("--sms-disabled", action="store_true", help="the account has no SMS set up")
    parser.add_argument(
        "--age-gated-sms", action="store_true", help="SMS consent needs a date of birth"
    )
    parser.add_argument(
        "--unknown-profile-in-list-add",
        choices=LIST_ADD_CHOICES,
        default="ignore",
        help="answer to unknown profile ids in Add Profile to List",
    )
    parser.add_argument(
        "--unknown-profile-in-list-remove",
        choices=LIST_ADD_CHOICES,
        default="400",
        help="answer to unknown profile ids in Remove Profiles from List",
    )
    parser.add_argument(
        "--import-external-id-match",
        action="store_true",
        help="bulk imports also match existing profiles by external_id",
    )
    parser.add_argument(
        "--unsubscribe-scope",
        choices=UNSUBSCRIBE_SCOPES,
        default="list",
        help="'list': members of the job's list get a list-level suppression; 'global': "
        "every unsubscribe is account-wide",
    )
    parser.add_argument(
        "--event-limits",
        choices=EVENT_LIMIT_CHOICES,
        default="docs",
        help="event ingestion limits from Klaviyo's guide (stricter) or its OpenAPI document",
    )
    parser.add_argument(
        "--openapi",
        type=Path,
        default=None,
        help="validate traffic against this OpenAPI document (default: the project's copy, "
        "when present); violations are printed",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="a conformance.json from `make conformance`: its measured lags, import timing "
        "and import rules replace the matching settings above",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    openapi = args.openapi
    if openapi is None and default_spec_path().exists():
        openapi = default_spec_path()
    emulator = KlaviyoEmulator(
        dict.fromkeys(args.api_keys or [DEFAULT_API_KEY]),
        rate_limits=args.rate_limits,
        revision=args.revision,
        port=args.port,
        openapi_path=openapi,
        seed=args.seed,
        verbose=args.verbose,
        subscribe_delay=args.subscribe_delay,
        unsubscribe_delay=args.unsubscribe_delay,
        deletion_delay=args.deletion_delay,
        import_delay=args.import_delay,
        import_rate=args.import_rate,
        event_delay=args.event_delay,
        search_lag=args.search_lag,
        segment_lag=args.segment_lag,
        latency=args.latency,
        default_opt_in=args.default_opt_in,
        sms_countries=args.sms_countries,
        sms_enabled=not args.sms_disabled,
        age_gated_sms=args.age_gated_sms,
        unknown_profile_in_list_add=args.unknown_profile_in_list_add,
        unknown_profile_in_list_remove=args.unknown_profile_in_list_remove,
        import_external_id_match=args.import_external_id_match,
        unsubscribe_scope=args.unsubscribe_scope,
        event_limits=args.event_limits,
        **(calibration.load(args.calibration) if args.calibration else {}),
    )
    emulator.start()
    print(f"Klaviyo emulator listening on {emulator.base_url}", flush=True)
    print(f"API keys: {', '.join(args.api_keys or [DEFAULT_API_KEY])}", flush=True)
    if args.seed_demo:
        print("Demo data: " + json.dumps(seed_demo(emulator)), flush=True)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    reported = 0
    try:
        while not stop.wait(0.5):
            violations = emulator.contract_violations
            for line in violations[reported:]:
                print(f"contract violation: {line}", file=sys.stderr, flush=True)
            reported = len(violations)
    finally:
        emulator.stop()
    print("Klaviyo emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``KlaviyoEmulator``: the public handle that owns the state and the HTTP server thread."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from .bulk_import import job_resource
from .calibration import from_environment as calibration_from_environment
from .config import Config
from .contract import load as load_contract
from .control import handle as handle_control
from .events import event_json
from .faults import FaultSet
from .model import KlaviyoList, Segment
from .operations import SERVED_OPERATIONS, Router
from .ratelimit import RateLimiter
from .recording import RecordedRequest
from .resources import profile_resource
from .segment_definitions import Definition
from .server import KlaviyoApp, QuietHandler, Settings, VerboseHandler, parse_revision
from .spec_rules import SpecRules
from .spec_rules import load as load_rules
from .state import Store

DEFAULT_REVISION = "2026-07-15"
DEFAULT_API_KEY = "pk_test_emulator"


class KlaviyoEmulator:
    """A local stand-in for Klaviyo's REST API (revision 2026-07-15) on 127.0.0.1.

    One emulator is one Klaviyo account. ``api_keys`` maps each accepted private key to its
    scopes (``None``: every scope); all keys share the account's rate-limit windows.

    The account's settings and behaviour (see ``config.Config``) are keyword arguments here
    and can be changed later with :meth:`configure`; :meth:`reset` restores these values:

    * ``rate_limits``: refuse over-limit requests with 429 (counted and reported either way);
    * ``subscribe_delay``, ``unsubscribe_delay``, ``deletion_delay``: seconds before a
      subscribe, unsubscribe or deletion job applies; ``import_delay``: seconds before a bulk
      import job starts, ``import_rate``: profiles per second it then processes (0: all at
      once); ``event_delay``: seconds before events are recorded; ``search_lag``: seconds
      before a written profile shows in filtered search; ``segment_lag``: seconds before
      segment membership follows a change;
    * ``default_opt_in`` ("double", Klaviyo's default) for subscribe jobs without a list;
    * ``sms_enabled``, ``sms_countries`` (region codes), ``age_gated_sms``;
    * ``unknown_profile_in_list_add`` ("ignore") and ``unknown_profile_in_list_remove``
      ("400"): "ignore", "400" or "404";
    * ``external_id_unique``: 409 on a shared external_id (Klaviyo allows sharing);
      ``import_external_id_match``: a bulk import matches profiles by external_id too;
    * ``unsubscribe_scope``: "list" (list members get a list-level suppression) or "global";
    * ``event_limits``: "docs" (the ingestion limits guide, stricter) or "spec";
    * ``latency``: None, "realistic" or a ``latency.LatencyModel``; the emulator waits with
      ``sleep``.

    ``clock`` drives the rate-limit windows and every delay and lag; ``seed`` makes ids,
    random faults and latency draws repeatable. ``openapi_path`` turns on contract
    validation of every exchange; ``rules`` replaces the rules read from the document
    (tests use it to loosen a rule and prove the contract check still reports it).
    """

    def __init__(
        self,
        api_keys: Mapping[str, Iterable[str] | None] | None = None,
        *,
        revision: str = DEFAULT_REVISION,
        port: int = 0,
        openapi_path: str | Path | None = None,
        rules: SpecRules | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        verbose: bool = False,
        **behaviour: Any,
    ) -> None:
        newest, _ = parse_revision(revision)
        self._seed = seed
        behaviour = {**behaviour, **calibration_from_environment()}
        self._behaviour = behaviour
        config = Config().changed(seed, **behaviour)
        self._settings_lock = threading.Lock()
        self._settings = Settings(
            api_keys=_normalise_keys(api_keys if api_keys is not None else {DEFAULT_API_KEY: None}),
            revision=newest,
            revision_text=revision,
        )
        self._initial_keys = dict(self._settings.api_keys)
        self._requested_port = port
        self._verbose = verbose
        self.rules = rules if rules is not None else load_rules(openapi_path, SERVED_OPERATIONS)
        self._store = Store(rng=random.Random(seed), clock=clock, config=config)
        self.faults = FaultSet(random.Random(seed))
        self._limiter = RateLimiter(clock)
        self._validator = load_contract(openapi_path) if openapi_path is not None else None
        self._record_lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._violations: list[str] = []
        self._epoch = 0
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._app = KlaviyoApp(
            store=self._store,
            settings=self._settings,
            router=Router(self.rules),
            faults=self.faults,
            limiter=self._limiter,
            record=self._record,
            validator=self._validator,
            report_violations=self._report,
            control=self._control,
            sleep=sleep,
            settings_lock=self._settings_lock,
            epoch=lambda: self._epoch,
        )

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> KlaviyoEmulator:
        if self._server is not None:
            return self
        handler = VerboseHandler if self._verbose else QuietHandler
        server = make_server(
            "127.0.0.1", self._requested_port, self._app, threaded=True, request_handler=handler
        )
        self._server = server
        with self._settings_lock:
            self._settings.base_url = f"http://127.0.0.1:{server.port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"klaviyo-emulator-{server.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> KlaviyoEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return int(self._server.port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def wsgi_app(self) -> KlaviyoApp:
        """The application the server runs: callable in this process without a socket (the
        fleet simulation answers thousands of calls a second this way)."""
        return self._app

    # ---- configuration -------------------------------------------------------------------

    def set_api_keys(self, api_keys: Mapping[str, Iterable[str] | None]) -> None:
        with self._settings_lock:
            self._settings.api_keys = _normalise_keys(api_keys)

    @property
    def config(self) -> Config:
        """The settings in force (see :meth:`configure`)."""
        return self._store.config

    def configure(self, **changes: Any) -> Config:
        """Change account settings or behaviour at runtime, by the constructor's names.

        Takes effect for the next request; pending jobs keep the delay they were given.
        Raises TypeError for an unknown name and ValueError for an invalid value.
        """
        with self._store.lock:
            self._store.config = self._store.config.changed(self._seed, **changes)
            return self._store.config

    def set_rate_limits(
        self, enabled: bool, overrides: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        """Switch enforcement on/off; ``overrides`` maps operationId to ``(burst, steady)``.

        Counting restarts, so a test starts from empty windows.
        """
        self.configure(rate_limits=enabled)
        if overrides is not None:
            with self._settings_lock:
                self._settings.rate_overrides = dict(overrides)
        self._limiter.reset()

    def reset(self) -> None:
        """Back to the state right after construction.

        Forgets profiles, lists, segments, events, import and pending jobs and lags, faults,
        recorded requests, rate-limit counters and contract violations, and restores the
        constructor's API keys and settings, so a shared emulator leaks nothing between tests.
        """
        self._epoch += 1
        self._store.reset(self._seed)  # seeded ids start their draws over, as constructed
        with self._store.lock:
            # Built afresh so a seeded latency model starts its draws over.
            self._store.config = Config().changed(self._seed, **self._behaviour)
        self.faults.clear()
        self._limiter.reset()
        with self._record_lock:
            self._requests.clear()
            self._violations.clear()
        with self._settings_lock:
            self._settings.api_keys = dict(self._initial_keys)
            self._settings.rate_overrides = {}

    # ---- seeding and inspection ----------------------------------------------------------

    def create_list(self, name: str, list_id: str | None = None, opt_in: str = "double") -> str:
        """Seed a list; double opt-in unless ``opt_in="single"``, as new Klaviyo lists are."""
        return self._store.create_list(name, list_id, opt_in)

    def create_segment(
        self,
        name: str,
        segment_id: str | None = None,
        definition: Definition | None = None,
        member_of_list: str | None = None,
    ) -> str:
        """Seed a segment; with a ``definition`` (see ``segment_definitions.py``) its
        membership follows the profiles' data, with ``member_of_list`` (a list id: Klaviyo's
        "is in list" condition) that list's adds and removals; either ``segment_lag`` seconds
        after each change."""
        return self._store.create_segment(name, segment_id, definition, member_of_list)

    def add_to_segment(
        self, segment_id: str, profile_id: str, joined_at: str | datetime | None = None
    ) -> None:
        """Seed segment membership; it shows after ``segment_lag``."""
        self._store.add_to_segment(segment_id, profile_id, joined_at)

    def remove_from_segment(self, segment_id: str, profile_id: str) -> None:
        self._store.remove_from_segment(segment_id, profile_id)

    def add_to_list(
        self, list_id: str, *profile_ids: str, joined_at: str | datetime | None = None
    ) -> None:
        """Seed list membership (what Add Profile to List does, without the HTTP call), joined
        now or at ``joined_at`` (a list built over months)."""
        with self._store.lock:
            self._store.settle()
            for profile_id in profile_ids:
                self._store.profile(profile_id)
            self._store.add_list_members(list_id, list(profile_ids), joined_at)

    def create_profile(
        self,
        *,
        created: str | datetime | None = None,
        updated: str | datetime | None = None,
        last_event_date: str | datetime | None = None,
        **attributes: Any,
    ) -> str:
        """Seed a profile, bypassing the duplicate rules (the attribute checks still apply)."""
        profile = self._store.seed_profile(
            attributes, created=created, updated=updated, last_event_date=last_event_date
        )
        return profile.id

    def suppress(
        self, profile_id: str, reason: str = "UNSUBSCRIBE", list_id: str | None = None
    ) -> None:
        """Seed an email suppression (``UNSUBSCRIBE`` also sets consent to UNSUBSCRIBED)."""
        self._store.suppress(profile_id, reason, list_id)

    def profile(self, profile_id: str) -> dict[str, Any]:
        """The resource ``GET /api/profiles/{id}?additional-fields[profile]=subscriptions``
        would return as ``data``; KeyError for an unknown id."""
        with self._store.lock:
            self._store.settle()
            found = self._store.profiles.get(profile_id)
            if found is None:
                raise KeyError(profile_id)
            return profile_resource(found, self._link_base(), subscriptions=True)

    def profiles(self) -> list[dict[str, Any]]:
        """Every profile as :meth:`profile` shows it, in the order they were added."""
        with self._store.lock:
            self._store.settle()
            return [
                profile_resource(p, self._link_base(), subscriptions=True)
                for p in self._store.profiles.values()
            ]

    def events(
        self, metric: str | None = None, profile_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The events Klaviyo recorded (after ``event_delay`` and de-duplication), oldest
        first, as plain JSON; optionally only one metric's or one profile's."""
        with self._store.lock:
            self._store.settle()
            return [
                event_json(e)
                for e in self._store.events
                if (metric is None or e.metric == metric)
                and (profile_id is None or e.profile_id == profile_id)
            ]

    def confirmations(self) -> list[dict[str, Any]]:
        """The double opt-in confirmations Klaviyo sent (``profile_id``, ``list_id``,
        ``channel``: email or sms, ``sent``), oldest first. A historical import sends none."""
        with self._store.lock:
            self._store.settle()
            return [dict(c) for c in self._store.confirmations]

    def import_job(self, job_id: str) -> dict[str, Any]:
        """A bulk import job as ``GET /api/profile-bulk-import-jobs/{id}`` shows it, plus the
        ids of the profiles it created or updated (``profile_ids``) and its import errors
        (``errors``: code, detail, pointer); KeyError for an unknown id."""
        with self._store.lock:
            self._store.settle()
            job = self._store.import_jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            resource = job_resource(job, self._link_base())
            resource["profile_ids"] = list(job.profile_ids)
            resource["errors"] = [
                {"code": f.code, "detail": f.detail, "pointer": f.pointer} for f in job.failures
            ]
            return resource

    def import_jobs(self) -> list[dict[str, Any]]:
        """Every bulk import job, oldest first, as :meth:`import_job` shows it."""
        with self._store.lock:
            self._store.settle()
            return [self.import_job(job_id) for job_id in self._store.import_jobs]

    def list_members(self, list_id: str) -> set[str]:
        with self._store.lock:
            self._store.settle()
            found = self._store.lists.get(list_id)
            if found is None:
                raise KeyError(list_id)
            return set(found.members)

    def segment_members(self, segment_id: str) -> set[str]:
        with self._store.lock:
            self._store.settle()
            found = self._store.segments.get(segment_id)
            if found is None:
                raise KeyError(segment_id)
            return set(found.members)

    def confirm_double_opt_in(
        self, profile_id: str, list_id: str | None, via: str | None = None
    ) -> None:
        """Play the person confirming a double opt-in subscription.

        ``list_id`` is ``None`` for a job without a list under a double opt-in account
        default. ``via="email"`` confirms email only, ``via="sms"`` SMS and email, ``None``
        everything pending. Raises ValueError when nothing is pending for that profile and list.
        """
        with self._store.lock:
            self._store.settle()
            self._store.confirm_double_opt_in(profile_id, list_id, via)

    def state(self) -> dict[str, Any]:
        """Everything the emulator holds, as plain JSON (the control API's ``/state``)."""
        with self._store.lock:
            self._store.settle()
            return {
                "config": self._store.config.to_json(),
                "profiles": self.profiles(),
                "lists": [_group_json(lst) for lst in self._store.lists.values()],
                "segments": [_group_json(seg) for seg in self._store.segments.values()],
                "events": self.events(),
                "import_jobs": self.import_jobs(),
                "confirmations": self.confirmations(),
            }

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._record_lock:
            return list(self._requests)

    def calls(self, operation_id: str | None = None) -> int:
        with self._record_lock:
            if operation_id is None:
                return len(self._requests)
            return sum(1 for r in self._requests if r.operation_id == operation_id)

    @property
    def contract_violations(self) -> list[str]:
        with self._record_lock:
            return list(self._violations)

    def clear_contract_violations(self) -> None:
        with self._record_lock:
            self._violations.clear()

    # ---- internals -----------------------------------------------------------------------

    def _link_base(self) -> str:
        with self._settings_lock:
            return self._settings.base_url or "http://127.0.0.1"

    def _record(self, recorded: RecordedRequest) -> None:
        with self._record_lock:
            self._requests.append(recorded)

    def _report(self, violations: list[str]) -> None:
        with self._record_lock:
            self._violations.extend(violations)

    def _control(self, request: Request) -> Response:
        return handle_control(self, request)


def _normalise_keys(
    api_keys: Mapping[str, Iterable[str] | None],
) -> dict[str, frozenset[str] | None]:
    return {key: None if scopes is None else frozenset(scopes) for key, scopes in api_keys.items()}


def _group_json(group: KlaviyoList | Segment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": group.id,
        "name": group.name,
        "members": {pid: joined.isoformat() for pid, joined in group.members.items()},
    }
    if isinstance(group, KlaviyoList):
        data["opt_in"] = group.opt_in
    return data

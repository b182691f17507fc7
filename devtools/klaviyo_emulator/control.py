"""The ``/_emulator/`` control API, for driving an emulator that runs in another process.

No auth, plain ``application/json``. Routes::

    GET    /_emulator/state                  config, profiles, lists, segments, events, jobs
    POST   /_emulator/reset                  clear state, faults, recorded requests; restore config
    GET    /_emulator/config                 the settings in force
    POST   /_emulator/config                 {"search_lag": 2, "sms_countries": ["US", "CA"], ...}
    GET    /_emulator/faults                 faults in matching order
    POST   /_emulator/faults                 add one (JSON of Fault fields; body as text)
    DELETE /_emulator/faults                 remove all
    POST   /_emulator/lists                  {"name", "id"?, "opt_in"?: "double"|"single"}
    POST   /_emulator/segments               {"name", "id"?, "profile_ids"?, "definition"?,
                                              "member_of_list"?: a list id}
    POST   /_emulator/segments/<id>/profiles {"profile_id", "joined_at"?}
    POST   /_emulator/profiles               profile attributes (+ "created"/"updated")
    POST   /_emulator/double-opt-in          {"profile_id", "list_id", "via"?: "email"|"sms"}
    POST   /_emulator/rate-limits            {"enabled": bool, "overrides"?: {op: [burst, steady]}}
    GET    /_emulator/requests               method, path, status, operation_id of each request
    GET    /_emulator/events                 recorded events (?metric=...&profile_id=...)
    GET    /_emulator/import-jobs            bulk import jobs, with profile ids and errors
    GET    /_emulator/import-jobs/<id>       one of them
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from werkzeug.wrappers import Request, Response

from .config import Config
from .errors import ApiError
from .faults import Fault, FaultSet
from .recording import RecordedRequest
from .segment_definitions import Definition


class ControlledEmulator(Protocol):
    """What the control API drives: the methods of ``KlaviyoEmulator`` it calls (named
    here so that the emulator imports this module and not the reverse)."""

    faults: FaultSet

    @property
    def config(self) -> Config: ...

    @property
    def requests(self) -> list[RecordedRequest]: ...

    def state(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def configure(self, **changes: Any) -> Config: ...

    def create_list(self, name: str, list_id: str | None = None, opt_in: str = "double") -> str: ...

    def create_segment(
        self,
        name: str,
        segment_id: str | None = None,
        definition: Definition | None = None,
        member_of_list: str | None = None,
    ) -> str: ...

    def add_to_segment(
        self, segment_id: str, profile_id: str, joined_at: str | datetime | None = None
    ) -> None: ...

    def create_profile(self, **attributes: Any) -> str: ...

    def confirm_double_opt_in(
        self, profile_id: str, list_id: str | None, via: str | None = None
    ) -> None: ...

    def set_rate_limits(
        self, enabled: bool, overrides: Mapping[str, tuple[int, int]] | None = None
    ) -> None: ...

    def events(
        self, metric: str | None = None, profile_id: str | None = None
    ) -> list[dict[str, Any]]: ...

    def import_job(self, job_id: str) -> dict[str, Any]: ...

    def import_jobs(self) -> list[dict[str, Any]]: ...


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _no_content() -> Response:
    return Response(b"", status=204)


def _bad(message: str) -> Response:
    return _json(400, {"error": message})


def _required(payload: Any, name: str) -> Any:
    if not isinstance(payload, dict) or name not in payload:
        raise KeyError(name)
    return payload[name]


def handle(emulator: ControlledEmulator, request: Request) -> Response:
    path = request.path.rstrip("/")
    method = request.method
    try:
        payload = json.loads(request.get_data() or b"null")
    except ValueError:
        return _bad("body is not JSON")
    try:
        if path == "/_emulator/state" and method == "GET":
            return _json(200, emulator.state())
        if path == "/_emulator/reset" and method == "POST":
            emulator.reset()
            return _no_content()
        if path == "/_emulator/config":
            if method == "GET":
                return _json(200, emulator.config.to_json())
            if method == "POST":
                if not isinstance(payload, dict):
                    return _bad("expected a JSON object of settings")
                return _json(200, emulator.configure(**payload).to_json())
        if path == "/_emulator/faults":
            if method == "GET":
                return _json(200, [f.to_json() for f in emulator.faults])
            if method == "DELETE":
                emulator.faults.clear()
                return _no_content()
            if method == "POST":
                if not isinstance(payload, dict):
                    return _bad("expected a JSON object of Fault fields")
                fault = emulator.faults.add(Fault.from_json(payload))
                return _json(201, fault.to_json())
        if path == "/_emulator/lists" and method == "POST":
            list_id = emulator.create_list(
                _required(payload, "name"),
                list_id=payload.get("id"),
                opt_in=payload.get("opt_in", "double"),
            )
            return _json(201, {"id": list_id})
        if path == "/_emulator/segments" and method == "POST":
            segment_id = emulator.create_segment(
                _required(payload, "name"),
                segment_id=payload.get("id"),
                definition=payload.get("definition"),
                member_of_list=payload.get("member_of_list"),
            )
            for profile_id in payload.get("profile_ids", []):
                emulator.add_to_segment(segment_id, profile_id)
            return _json(201, {"id": segment_id})
        parts = path.split("/")
        if len(parts) == 5 and parts[2:5:2] == ["segments", "profiles"] and method == "POST":
            emulator.add_to_segment(
                parts[3], _required(payload, "profile_id"), joined_at=payload.get("joined_at")
            )
            return _no_content()
        if path == "/_emulator/profiles" and method == "POST":
            if not isinstance(payload, dict):
                return _bad("expected a JSON object of profile attributes")
            return _json(201, {"id": emulator.create_profile(**payload)})
        if path == "/_emulator/double-opt-in" and method == "POST":
            emulator.confirm_double_opt_in(
                _required(payload, "profile_id"),
                _required(payload, "list_id"),
                via=payload.get("via"),
            )
            return _no_content()
        if path == "/_emulator/rate-limits" and method == "POST":
            overrides = {
                op: (int(limits[0]), int(limits[1]))
                for op, limits in (payload.get("overrides") or {}).items()
            }
            emulator.set_rate_limits(bool(_required(payload, "enabled")), overrides or None)
            return _no_content()
        if path == "/_emulator/events" and method == "GET":
            return _json(
                200,
                emulator.events(
                    metric=request.args.get("metric"), profile_id=request.args.get("profile_id")
                ),
            )
        if path == "/_emulator/import-jobs" and method == "GET":
            return _json(200, emulator.import_jobs())
        if len(parts) == 4 and parts[2] == "import-jobs" and method == "GET":
            try:
                return _json(200, emulator.import_job(parts[3]))
            except KeyError:
                return _json(404, {"error": f"no import job {parts[3]}"})
        if path == "/_emulator/requests" and method == "GET":
            return _json(
                200,
                [
                    {
                        "method": r.method,
                        "path": r.path,
                        "status": r.status,
                        "operation_id": r.operation_id,
                    }
                    for r in emulator.requests
                ],
            )
    except KeyError as exc:
        return _bad(f"missing field {exc}")
    except ApiError as exc:
        return _json(exc.status, exc.body())
    except (TypeError, ValueError) as exc:
        return _bad(str(exc))
    return _json(404, {"error": f"no control route {method} {request.path}"})

"""The /_emulator/ control API, the standalone command and the pytest fixture."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bulk_bodies import EVENTS, IMPORT_JOBS, event, import_job, profile
from emulator_http import Api

from devtools.klaviyo_emulator import KlaviyoEmulator
from devtools.klaviyo_emulator.contract import default_spec_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _control(api: Api, method: str, path: str, body: object = None) -> tuple[int, Any]:
    reply = api.request(
        method, f"/_emulator/{path}", body, key=None, revision=None, content_type="application/json"
    )
    return reply.status, (reply.json() if reply.body else None)


def test_control_api_seeds_and_inspects(api: Api, emu: KlaviyoEmulator) -> None:
    assert _control(api, "POST", "lists", {"name": "Newsletter", "id": "Y6nRLr"}) == (
        201,
        {"id": "Y6nRLr"},
    )
    status, created = _control(api, "POST", "profiles", {"email": "ctl@example.com"})
    assert status == 201
    pid = created["id"]
    status, segment = _control(api, "POST", "segments", {"name": "VIP", "profile_ids": [pid]})
    assert status == 201
    segment_id = segment["id"]
    other = emu.create_profile(email="other@example.com")
    assert _control(api, "POST", f"segments/{segment_id}/profiles", {"profile_id": other})[0] == 204
    status, state = _control(api, "GET", "state")
    assert status == 200
    assert [p["attributes"]["email"] for p in state["profiles"]] == [
        "ctl@example.com",
        "other@example.com",
    ]
    assert state["lists"][0]["id"] == "Y6nRLr"
    assert set(state["segments"][0]["members"]) == {pid, other}
    assert emu.segment_members(segment_id) == {pid, other}


def test_control_api_faults_and_reset(api: Api, emu: KlaviyoEmulator) -> None:
    status, fault = _control(api, "POST", "faults", {"status": 500, "operation_id": "get_profiles"})
    assert status == 201
    assert fault["status"] == 500
    assert _control(api, "GET", "faults")[1][0]["operation_id"] == "get_profiles"
    assert api.get("/api/profiles").status == 500
    _control(api, "POST", "faults", {"body": "not json", "times": None})
    assert api.get("/api/profiles").body == b"not json"
    assert _control(api, "DELETE", "faults")[0] == 204
    assert api.get("/api/profiles").status == 200
    emu.create_profile(email="gone@example.com")
    status, requests = _control(api, "GET", "requests")
    assert [r["status"] for r in requests] == [500, 200, 200]
    assert _control(api, "POST", "reset")[0] == 204
    assert emu.profiles() == [] and emu.requests == []


def test_control_api_rate_limits_and_double_opt_in(api: Api, emu: KlaviyoEmulator) -> None:
    _control(api, "POST", "rate-limits", {"enabled": True, "overrides": {"get_profiles": [1, 5]}})
    assert [api.get("/api/profiles").status for _ in range(2)] == [200, 429]
    _control(api, "POST", "rate-limits", {"enabled": False})
    list_id = emu.create_list("Double", opt_in="double")
    pid = emu.create_profile(email="d@example.com")
    job = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "d@example.com",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}}
                                },
                            },
                        }
                    ]
                }
            },
            "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
        }
    }
    assert api.post("/api/profile-subscription-bulk-create-jobs", job).status == 202
    payload = {"profile_id": pid, "list_id": list_id, "via": "email"}
    assert _control(api, "POST", "double-opt-in", payload)[0] == 204
    assert emu.list_members(list_id) == {pid}


def test_control_api_configures_and_reset_restores(api: Api, emu: KlaviyoEmulator) -> None:
    status, config = _control(
        api,
        "POST",
        "config",
        {"search_lag": 2, "sms_countries": ["US", "GB"], "unknown_profile_in_list_add": "404"},
    )
    assert status == 200
    assert (config["search_lag"], config["sms_countries"]) == (2, ["GB", "US"])
    assert emu.config.unknown_profile_in_list_add == "404"
    assert _control(api, "GET", "config")[1] == config
    assert _control(api, "POST", "config", {"latency": "realistic"})[1]["latency"] == "realistic"
    assert _control(api, "POST", "config", {"sms_countrys": ["US"]})[0] == 400
    _control(api, "POST", "reset")
    assert _control(api, "GET", "config")[1]["search_lag"] == 0
    assert _control(api, "GET", "state")[1]["config"]["latency"] is None


def test_control_api_rule_segment_and_confirm_via(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="g@example.com", properties={"tier": "gold"})
    definition = [{"field": "properties.tier", "operator": "equals", "value": "gold"}]
    status, segment = _control(api, "POST", "segments", {"name": "Gold", "definition": definition})
    assert status == 201
    assert emu.segment_members(segment["id"]) == {pid}
    bad = {"name": "Bad", "definition": [{"field": "x", "operator": "like"}]}
    assert _control(api, "POST", "segments", bad)[0] == 400


def test_control_api_list_defined_segment(api: Api, emu: KlaviyoEmulator) -> None:
    pid = emu.create_profile(email="listed@example.com")
    list_id = emu.create_list("Scratch")
    emu.add_to_list(list_id, pid)
    body = {"name": "On the list", "member_of_list": list_id}
    status, segment = _control(api, "POST", "segments", body)
    assert status == 201
    assert emu.segment_members(segment["id"]) == {pid}
    unknown = {"name": "Nowhere", "member_of_list": "nope"}
    assert _control(api, "POST", "segments", unknown)[0] == 404


def test_control_api_shows_events_and_import_jobs(api: Api, emu: KlaviyoEmulator) -> None:
    body = event({"email": "ev@example.com"}, metric="Lead Received")
    assert api.post(EVENTS, body).status == 202
    assert api.post(EVENTS, event({"email": "ev@example.com"}, metric="Other")).status == 202
    status, events = _control(api, "GET", "events")
    assert status == 200
    assert [e["metric"] for e in events] == ["Lead Received", "Other"]
    reply = api.request(
        "GET", "/_emulator/events?metric=Other", key=None, revision=None, content_type=None
    )
    assert [e["metric"] for e in reply.json()] == ["Other"]
    unknown = profile("01ZZZZZZZZZZZZZZZZZZZZZZZZ", first_name="Ghost")
    job_id = api.post(IMPORT_JOBS, import_job(unknown)).json()["data"]["id"]
    status, jobs = _control(api, "GET", "import-jobs")
    assert status == 200
    assert [j["id"] for j in jobs] == [job_id]
    status, job = _control(api, "GET", f"import-jobs/{job_id}")
    assert status == 200
    assert job["attributes"]["failed_count"] == 1
    assert job["errors"][0]["pointer"] == "/data/attributes/profiles/data/0/id"
    assert _control(api, "GET", "import-jobs/nope")[0] == 404
    state = _control(api, "GET", "state")[1]
    assert len(state["events"]) == 2 and len(state["import_jobs"]) == 1
    _control(api, "POST", "reset")
    assert _control(api, "GET", "events")[1] == []
    assert _control(api, "GET", "import-jobs")[1] == []


def test_control_api_configures_the_new_settings(api: Api, emu: KlaviyoEmulator) -> None:
    changes = {
        "import_delay": 30,
        "import_rate": 100,
        "import_external_id_match": True,
        "unsubscribe_delay": 5,
        "unsubscribe_scope": "global",
        "event_delay": 1,
        "event_limits": "spec",
        "unknown_profile_in_list_remove": "ignore",
    }
    status, config = _control(api, "POST", "config", changes)
    assert status == 200
    assert config == {**config, **changes}
    assert _control(api, "POST", "config", {"unsubscribe_scope": "everywhere"})[0] == 400
    assert _control(api, "POST", "config", {"import_rate": -1})[0] == 400


def test_control_api_errors(api: Api) -> None:
    assert _control(api, "POST", "faults", {"bogus": 1})[0] == 400
    assert _control(api, "POST", "lists", {})[0] == 400
    assert _control(api, "GET", "nothing")[0] == 404
    assert _control(api, "POST", "segments/none/profiles", {"profile_id": "x"})[0] == 404


def test_control_requests_are_not_recorded(api: Api, emu: KlaviyoEmulator) -> None:
    _control(api, "GET", "state")
    assert emu.calls() == 0


# ---- standalone process --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def standalone() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.klaviyo_emulator", "--port", str(port), "--seed-demo"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_standalone_command_serves_demo_data(
    standalone: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = standalone
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert f"http://127.0.0.1:{port}" in banner, banner + (
        proc.stderr.read() if proc.stderr else ""
    )
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    demo = json.loads(lines[1].split("Demo data: ", 1)[1])
    assert demo["list"] == "Y6nRLr" and demo["segment"] == "VIPseg"
    api = Api(f"http://127.0.0.1:{port}")
    listed = api.get("/api/lists/Y6nRLr")
    assert listed.status == 200
    assert listed.json()["data"]["attributes"]["name"] == "Newsletter"
    segment = api.get("/api/segments/VIPseg")
    assert segment.json()["data"]["attributes"]["name"] == "VIP customers"
    members = api.get("/api/segments/VIPseg/relationships/profiles").json()["data"]
    assert [m["id"] for m in members] == [demo["profiles"][0]]
    profiles = api.get("/api/profiles").json()["data"]
    assert len(profiles) == 2
    assert api.post("/_emulator/reset", b"", key=None, revision=None).status == 204
    assert api.get("/api/profiles").json()["data"] == []
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == 0


def test_standalone_flags_set_the_account() -> None:
    port = _free_port()
    flags = [
        "--latency",
        "realistic",
        "--search-lag",
        "1.5",
        "--segment-lag",
        "3",
        "--deletion-delay",
        "2",
        "--sms-countries",
        "US,CA",
        "--sms-disabled",
        "--age-gated-sms",
        "--unknown-profile-in-list-add",
        "404",
        "--default-opt-in",
        "single",
        "--rate-limits",
        "--import-delay",
        "60",
        "--import-rate",
        "500",
        "--import-external-id-match",
        "--unsubscribe-delay",
        "4",
        "--unsubscribe-scope",
        "global",
        "--event-delay",
        "0.5",
        "--event-limits",
        "spec",
        "--unknown-profile-in-list-remove",
        "ignore",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.klaviyo_emulator", "--port", str(port), *flags],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "listening" in proc.stdout.readline()
        status, config = _control(Api(f"http://127.0.0.1:{port}"), "GET", "config")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5)
    assert status == 200
    assert config == {
        **config,
        "latency": "realistic",
        "search_lag": 1.5,
        "segment_lag": 3.0,
        "deletion_delay": 2.0,
        "sms_countries": ["CA", "US"],
        "sms_enabled": False,
        "age_gated_sms": True,
        "unknown_profile_in_list_add": "404",
        "default_opt_in": "single",
        "rate_limits": True,
        "import_delay": 60.0,
        "import_rate": 500.0,
        "import_external_id_match": True,
        "unsubscribe_delay": 4.0,
        "unsubscribe_scope": "global",
        "event_delay": 0.5,
        "event_limits": "spec",
        "unknown_profile_in_list_remove": "ignore",
    }


# ---- the pytest fixture ----------------------------------------------------------------------

_FIXTURE_TEST = textwrap.dedent(
    """
    import http.client
    import pytest

    def _get(emu, target):
        conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
        conn.request("GET", target, headers={
            "Authorization": "Klaviyo-API-Key pk_test_emulator", "revision": "2026-07-15"})
        return conn.getresponse().status

    def test_clean(klaviyo_emulator):
        assert klaviyo_emulator.profiles() == []
        klaviyo_emulator.create_profile(email="leak@example.com")
        assert _get(klaviyo_emulator, "/api/profiles") == 200

    def test_fresh_state(klaviyo_emulator):
        assert klaviyo_emulator.profiles() == []

    def test_violating(klaviyo_emulator):
        assert _get(klaviyo_emulator, "/api/profiles?bogus=1") == 200

    @pytest.mark.klaviyo_contract_violations_allowed
    def test_violating_allowed(klaviyo_emulator):
        assert _get(klaviyo_emulator, "/api/profiles?bogus=1") == 200
    """
)


def test_fixture_fails_tests_with_contract_violations(tmp_path: Path) -> None:
    if not default_spec_path().exists():
        pytest.skip("Klaviyo's OpenAPI document is not next to the repository")
    (tmp_path / "test_uses_fixture.py").write_text(_FIXTURE_TEST)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "devtools.klaviyo_emulator.pytest_fixtures",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    # The violating test passes its call phase and errors at teardown.
    assert "4 passed, 1 error" in out, out + result.stderr
    assert "ERROR at teardown of test_violating _" in out, out
    assert "parameter 'bogus' is not defined" in out

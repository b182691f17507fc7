"""Reading and checking lead files (klaviyo_leads.lead_files), without AWS."""

from __future__ import annotations

import io
import json

import pytest

from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.config import Settings
from klaviyo_leads.lead_files import assembler
from klaviyo_leads.lead_files.assembler import (
    LOOK_EVERY_SECONDS,
    LOOK_FOR_SECONDS,
    LOOK_SOONEST_SECONDS,
    look,
    next_look_in,
)
from klaviyo_leads.lead_files.bucket import MAX_KEY_BYTES, FileProblem, is_own_output, target_of
from klaviyo_leads.lead_files.checks import FirstRows, defaults_of, lead_of
from klaviyo_leads.lead_files.report import Report, check_file
from klaviyo_leads.lead_files.results_file import result_columns
from klaviyo_leads.lead_files.rows import MAX_COLUMNS, MAX_ROW_BYTES, Layout, Row, read_rows
from klaviyo_leads.lead_files.storage import Services

SUBSCRIBE = ACTIONS["subscribe_profile_to_list"]
CREATE = ACTIONS["create_profile"]


def rows(data: bytes, jsonl: bool | None = None) -> tuple[list[Row], Layout]:
    layout = Layout()
    return list(read_rows(io.BytesIO(data), jsonl, layout)), layout


def checked(data: bytes, action=SUBSCRIBE, metadata=None, name="x.csv") -> dict:
    target = target_of(f"{action.name}/{name}")
    report = Report("bucket", target.key, None, "run", action.name, False)
    check_file(lambda: io.BytesIO(data), report, target, metadata or {}, Settings())
    return report.as_json()


def test_csv_with_bom_quotes_commas_and_newlines() -> None:
    data = '\ufeffEmail,First Name,Note\r\n"a@example.com","Ann, Jr.","two\nlines"\r\n'
    found, layout = rows(data.encode())
    assert (
        layout.bom and layout.delimiter == "," and layout.columns == ["Email", "First Name", "Note"]
    )
    assert [r.values for r in found] == [
        {"Email": "a@example.com", "First Name": "Ann, Jr.", "Note": "two\nlines"}
    ]


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_are_sniffed(delimiter: str) -> None:
    data = f"email{delimiter}phone_1\na@example.com{delimiter}+12025550123\n".encode()
    found, layout = rows(data)
    assert layout.delimiter == delimiter
    assert found[0].values == {"email": "a@example.com", "phone_1": "+12025550123"}


def test_a_comma_inside_quotes_does_not_make_commas_the_delimiter() -> None:
    _, layout = rows(b'"email";"note, long"\na@example.com;x\n')
    assert layout.delimiter == ";"


def test_json_lines_rows_and_bad_lines() -> None:
    data = b'{"email": "a@example.com", "klaviyo": {"list_id": "Y6nRLr"}}\n\nnot json\n[1]\n'
    found, layout = rows(data)
    assert layout.format == "jsonl"
    assert [(r.number, r.blank) for r in found] == [(1, False), (2, True), (3, False), (4, False)]
    found = [r for r in found if not r.blank]
    assert found[0].values == {"email": "a@example.com", "klaviyo": {"list_id": "Y6nRLr"}}
    assert (
        found[1].problem is not None
        and found[1].problem.reason == "The request body is not valid JSON"
    )
    assert found[2].problem is not None and "JSON object" in (found[2].problem.reason or "")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "The file is empty"),
        (b"\xef\xbb\xbf\n\n", "The file is empty"),
        (b"email\n", "no rows"),
        (b"jane@example.com,Jane\nbob@example.com,Bob\n", "not a header"),
        (b"email,first_name\na@example.com,Ann,extra\n", "Row 1 has 3 fields"),
        (b"email\n\xff\xfe@example.com\n", "not valid UTF-8"),
        (b"email,email\na,b\n", "more than once: email"),
    ],
)
def test_bad_files_say_why(data: bytes, says: str) -> None:
    with pytest.raises(FileProblem) as problem:
        rows(data)
    assert says in str(problem.value)


def test_a_header_past_the_column_cap_is_refused_before_any_other_check() -> None:
    """A wide header with a repeated name (once quadratic to check) is refused for its width."""
    columns = MAX_COLUMNS + 2
    header = ",".join(["email", *(f"c{i}" for i in range(columns - 2)), "c0"])
    with pytest.raises(FileProblem) as problem:
        rows(f"{header}\na@example.com\n".encode())
    assert f"{columns:,} columns, more than the {MAX_COLUMNS:,}" in str(problem.value)
    at_cap = ",".join(["email", *(f"c{i}" for i in range(MAX_COLUMNS - 2)), "c0"])
    with pytest.raises(FileProblem, match="more than once: c0"):
        rows(f"{at_cap}\na@example.com\n".encode())


@pytest.mark.parametrize(
    ("data", "row"),
    [
        (b"email,first_name\na@example.com,Ann\nb@example.com,Jos\xe9\n", "Row 2"),
        (b"email,first_name\nb@example.com,Jos\xe9\n", "Row 1"),
        (b"email,Pr\xe9nom\na@example.com,Ann\n", "The header row"),
        (b'{"email": "a@example.com"}\n{"email": "b@example.com", "n": "Jos\xe9"}\n', "Row 2"),
    ],
)
def test_text_that_is_not_utf8_names_its_row_and_how_to_save_the_file(
    data: bytes, row: str
) -> None:
    """A Latin-1 file (an é as one byte 0xE9): the row it is in, not the one before."""
    with pytest.raises(FileProblem) as problem:
        rows(data)
    assert str(problem.value).startswith(f"{row} is not valid UTF-8 (byte 0xE9): save the file")
    assert "CSV UTF-8" in str(problem.value)


def test_a_line_past_the_row_limit_is_a_row_error_and_the_rest_is_read() -> None:
    """Invariant: a line never held whole; its row refused with a reason, the others read."""
    long_cell = "x" * (MAX_ROW_BYTES + 10)
    data = f"email,note\na@example.com,short\nb@example.com,{long_cell}\nc@example.com,\n"
    found, _ = rows(data.encode())
    assert [r.number for r in found] == [1, 2, 3]
    assert found[1].problem is not None and found[1].raw == ["", ""]
    assert found[1].problem.reason == f"The row is longer than {MAX_ROW_BYTES // 1024} KB"
    assert [r.values for r in (found[0], found[2])] == [
        {"email": "a@example.com", "note": "short"},
        {"email": "c@example.com", "note": ""},
    ]
    lines = b'{"email": "a@example.com"}\n{"note": "' + long_cell.encode() + b'"}\n{"email": "c"}\n'
    found, _ = rows(lines)
    assert [(r.number, r.problem.reason if r.problem else None) for r in found] == [
        (1, None),
        (2, f"The row is longer than {MAX_ROW_BYTES // 1024} KB"),
        (3, None),
    ]
    report = checked(data.encode(), action=CREATE)
    assert report["accepted"] and report["rows_read"] == 3 and report["rows_to_send"] == 2
    assert report["refused"][0]["first_rows"] == [2]


def test_blank_lines_keep_their_row_numbers_and_are_counted() -> None:
    """Invariant: a row's number is its place in the file after the header, so the report's
    rows are the file's; blank lines at the end are not counted."""
    data = b"email\na@example.com\n\n\nnot-an-email\nb@example.com\n\n\n"
    report = checked(data, action=CREATE)
    assert report["rows_read"] == 3 and report["rows_to_send"] == 2
    assert report["blank_rows"] == {"count": 2, "first_rows": [2, 3]}
    assert report["refused"][0]["first_rows"] == [4]


def test_unknown_action_prefix() -> None:
    with pytest.raises(FileProblem, match="not under an action's prefix"):
        target_of("subscribe/leads.csv")
    target = target_of("dry-run/create_profile/a/b.jsonl")
    assert target.dry_run and target.jsonl and target.action is CREATE
    assert target.report_key == "results/dry-run/create_profile/a/b.jsonl.report.json"
    assert target.results_key == "results/dry-run/create_profile/a/b.jsonl.results.jsonl"


def test_two_files_differing_in_their_extension_never_share_outputs() -> None:
    csv_file, text_file = target_of("create_profile/coll.csv"), target_of("create_profile/coll.txt")
    for name in ("report_key", "progress_key", "results_key"):
        assert getattr(csv_file, name) != getattr(text_file, name), name
    assert csv_file.results_key == "results/create_profile/coll.csv.results.csv"


def test_outputs_of_a_long_key_fit_s3s_limit_and_stay_apart() -> None:
    """Invariant: every output key is at most 1,024 bytes, and two keys never share one."""
    longest = "create_profile/" + "é" * 400 + "x" * 200  # 1,015 bytes: a key S3 takes
    other = longest[:-1] + "y"
    assert len(longest.encode()) <= MAX_KEY_BYTES
    one, two = target_of(longest), target_of(other)
    for name in ("report_key", "progress_key", "results_key"):
        key = getattr(one, name)
        assert len(key.encode()) <= MAX_KEY_BYTES and key != getattr(two, name)
        assert not is_own_output(longest) and is_own_output(key)
    assert one.results_key.startswith("results/create_profile/éé")
    assert one.results_key.endswith(".results.csv") and "~" in one.results_key
    short = target_of("create_profile/short.csv")
    assert short.report_key == "results/create_profile/short.csv.report.json"  # not shortened


def test_own_outputs_are_not_files_of_leads() -> None:
    assert is_own_output("results/create_profile/x.csv.results.csv")
    assert is_own_output("results/create_profile/x.csv.report.json")
    assert is_own_output("results/.lead-files/runs/abc/state.json")
    assert not is_own_output("create_profile/x.csv")


def test_the_report_counts_refusals_per_reason_with_their_first_rows() -> None:
    data = (
        b"Email,Phone 1,Klaviyo List Id,Colour\n"
        b"a@example.com,,Y6nRLr,red\n"
        b"not-an-email,,Y6nRLr,\n"
        b",,Y6nRLr,\n"
        b"b@example.com,,Y6nRLr,\n"
        b"also bad,,Y6nRLr,\n"
    )
    report = checked(data)
    assert report["accepted"] and report["rows_read"] == 5
    assert report["rows_to_send"] == 2 and report["rows_refused"] == 3
    by_reason = {
        r["reason"]: (r["outcome"], r["count"], r["first_rows"]) for r in report["refused"]
    }
    assert by_reason["Invalid email address"] == ("failure", 2, [2, 5])
    assert by_reason["The lead has no email address or phone number to subscribe"][1:] == (1, [3])
    assert report["unknown_columns"] == ["Colour"]


def test_metadata_gives_every_row_its_settings_and_a_column_overrides_them() -> None:
    data = b"email,Klaviyo List Id\na@example.com,\nb@example.com,Abc123\n"
    found, _ = rows(data)
    defaults, unknown = defaults_of({"klaviyo.list_id": "Y6nRLr", "colour": "red"})
    assert defaults == {"klaviyo.list_id": "Y6nRLr"} and unknown == ["colour"]
    assert lead_of(found[0], defaults) == {
        "klaviyo.list_id": "Y6nRLr",
        "email": "a@example.com",
    }
    assert lead_of(found[1], defaults) == {
        "email": "b@example.com",
        "Klaviyo List Id": "Abc123",
    }


def test_a_bad_setting_in_metadata_refuses_every_row_as_configuration() -> None:
    report = checked(b"email\na@example.com\nb@example.com\n", metadata={"klaviyo.channels": "fax"})
    assert report["rows_to_send"] == 0
    assert report["refused"] == [
        {
            "outcome": "error",
            "reason": "Klaviyo Channels must be email, sms or both",
            "count": 2,
            "first_rows": [1, 2],
        }
    ]


def test_duplicate_rows_are_named() -> None:
    data = b"email,first_name\na@example.com,A\nb@example.com,B\na@example.com,A\na@example.com,A\n"
    report = checked(data, action=CREATE)
    assert report["rows_to_send"] == 4
    assert report["duplicate_rows"] == {
        "count": 2,
        "first": [{"row": 3, "same_as": 1}, {"row": 4, "same_as": 1}],
        "leads_not_remembered": 0,
    }


def test_display_name_headers_are_lead_keys() -> None:
    data = b"Email,Phone 1,First Name,Klaviyo Custom Favorite Color\na@example.com,,Ann,blue\n"
    report = checked(data, action=CREATE)
    assert report["unknown_columns"] == [] and report["rows_to_send"] == 1


def test_a_file_problem_is_the_report_problem() -> None:
    report = checked(b"email,first_name\na@example.com,Ann,extra\n")
    assert not report["accepted"] and "more than the header" in report["problem"]
    assert report["results"] is None


def test_the_report_is_json() -> None:
    json.dumps(checked(b"email\na@example.com\n"))


def test_results_columns_avoid_input_names() -> None:
    columns = result_columns(CREATE, ["email", "id"])
    names = dict(columns)
    assert names["id"] == "result.id" and names["outcome"] == "outcome"
    assert list(names)[:2] == ["outcome", "reason"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_assembler_looks_again_while_a_run_is_open_within_its_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Invariant: a run that finishes within the look is answered then, not a minute later,
    and one look never outlasts LOOK_FOR_SECONDS (so two looks never overlap)."""
    clock = _Clock()
    services = Services(s3=None, sqs=None, clock=lambda: clock.now, sleep=clock.sleep)
    answers = iter([[{"finished": False}], [{"finished": False}], [{"finished": True}]])
    monkeypatch.setattr(assembler, "check_runs", lambda services, bucket: next(answers))
    assert look(services, "bucket") == [{"finished": True}]
    assert clock.slept == [LOOK_EVERY_SECONDS] * 2

    clock.slept.clear()
    monkeypatch.setattr(assembler, "check_runs", lambda services, bucket: [{"finished": False}])
    assert look(services, "bucket") == [{"finished": False}]
    assert sum(clock.slept) + LOOK_EVERY_SECONDS > LOOK_FOR_SECONDS
    assert sum(clock.slept) <= LOOK_FOR_SECONDS

    clock.slept.clear()
    monkeypatch.setattr(assembler, "check_runs", lambda services, bucket: [])
    assert look(services, "bucket") == [] and clock.slept == []


def test_the_next_look_comes_when_the_rows_would_be_done_at_their_pace() -> None:
    """Invariant: the file follows its last row by about a second, not by up to five, and a
    run whose rows do not move is looked at no more often than usual."""
    still = {"rows": 10, "done": 0, "rows_per_second": 0.0}
    assert next_look_in([{"rows": 1000, "done": 700, "rows_per_second": 60}]) == 5
    soon = {"rows": 1000, "done": 820, "rows_per_second": 84.0}  # the last 180 in 2.14 s
    assert abs(next_look_in([soon, still]) - 180 / 84) < 1e-9
    now = {"rows": 1000, "done": 940, "rows_per_second": 108.0}  # 0.56 s: the floor
    assert next_look_in([still, now]) == LOOK_SOONEST_SECONDS
    # A run looked at for the first time has no pace yet.
    assert next_look_in([{"rows": 5, "done": 4, "rows_per_second": None}]) == 5


def test_the_assembler_looks_sooner_as_a_run_nears_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    services = Services(s3=None, sqs=None, clock=lambda: clock.now, sleep=clock.sleep)
    looked: dict[str, float] = {}

    def check_runs(services: object, bucket: str) -> list[dict[str, object]]:
        done = min(100, int(clock.now * 9))  # 9 rows a second: the last at 11.1 s
        pace = None
        if looked and clock.now > looked["at"]:
            pace = (done - looked["done"]) / (clock.now - looked["at"])
        looked.update(at=clock.now, done=done)
        return [{"rows": 100, "done": done, "rows_per_second": pace, "finished": done == 100}]

    monkeypatch.setattr(assembler, "check_runs", check_runs)
    assert look(services, "bucket")[0]["finished"]
    assert clock.slept[0] == LOOK_EVERY_SECONDS
    assert clock.now < 11.1 + 1.5  # a fixed 5 s cadence would have looked at 15 s


def test_first_rows_remembers_each_digest_s_first_row() -> None:
    """Invariant: the answer is a dict's (first row of each digest), however many rows."""
    import random

    rng = random.Random(5)
    table, expected = FirstRows(), {}
    digests = [rng.getrandbits(64) | 1 for _ in range(3000)]
    for row in range(1, 20_001):
        digest = rng.choice(digests) if row % 3 else rng.getrandbits(64) | 1
        assert table.first(digest, row) == expected.get(digest), row
        expected.setdefault(digest, row)


def test_first_rows_past_its_capacity_forgets_new_leads_and_keeps_the_others() -> None:
    """Invariant: its memory is fixed: past capacity a new lead is counted as not remembered,
    and the leads it holds are still found."""
    table = FirstRows(capacity=4)
    assert [table.first(d, row) for row, d in enumerate((3, 5, 7, 9), start=1)] == [None] * 4
    assert table.first(11, 5) is None and table.first(11, 6) is None
    assert table.forgotten == 2 and table.first(7, 7) == 3

"""The conformance check: the fixed scenario, its table, and how differences are marked."""

from __future__ import annotations

from devtools import conformance
from devtools.klaviyo_emulator import DEFAULT_API_KEY, Fault, KlaviyoEmulator

STEPS = [
    "create profile",
    "create it again (duplicate)",
    "get by email",
    "get by external_id",
    "get by id",
    "update",
    "add to list",
    "segment check",
    "subscribe email",
    "invalid email",
    "invalid phone",
    "bad filter",
    "bad API key",
]


def rows(output: str) -> dict[str, list[str]]:
    table = [line for line in output.splitlines() if line.startswith("| ")][2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return {row[0]: row for row in cells}


def test_without_a_key_the_emulator_answers_every_step_as_documented(capsys):
    assert conformance.main([], env={}) == 0
    output = capsys.readouterr().out
    table = rows(output)
    assert list(table) == STEPS
    for row in table.values():
        assert row[1] == row[2], row  # expected status == the emulator's
    assert table["create it again (duplicate)"][3] == "duplicate_profile@/data/attributes"
    assert table["bad filter"][3] == "invalid@filter"
    assert "Klaviyo: skipped" in output


def test_differences_from_a_real_account_are_marked(capsys):
    # A stand-in for the real account: a second emulator whose list add answers 404.
    with KlaviyoEmulator() as other:
        list_id = other.create_list("Scratch")
        segment_id = other.create_segment("Scratch")
        other.faults.add(Fault(operation_id="add_profiles_to_list", status=404))
        env = {
            "KLAVIYO_API_KEY": DEFAULT_API_KEY,
            "KLAVIYO_LIST_ID": list_id,
            "KLAVIYO_SEGMENT_ID": segment_id,
            "KLAVIYO_BASE_URL": other.base_url,
        }
        assert conformance.main([], env=env) == 1
        profiles = other.profiles()
    table = rows(capsys.readouterr().out)
    marked = [name for name, row in table.items() if row[-1] == "DIFFERS"]
    assert marked == ["add to list"]
    # It only ever touched the profile it made, and asked for its deletion.
    assert profiles == []

"""The README's tables are the code's tables: a change to one without the other fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from klaviyo_leads import fields
from klaviyo_leads.actions import ACTIONS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def table(marker: str) -> list[list[str]]:
    match = re.search(rf"<!-- {marker}\b.*?-->\n(.*?)<!-- /{marker} -->", README, re.S)
    assert match, f"README has no {marker} table"
    rows = [line for line in match.group(1).splitlines() if line.startswith("|")][2:]
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


def test_lead_fields_table():
    assert table("lead-fields") == [[f.key, f.seed_name, f.attribute] for f in fields.LEAD_FIELDS]


def test_variables_table():
    assert table("variables") == [[v.key, v.seed_name, v.meaning] for v in fields.VARIABLES]


def test_result_fields_table():
    rows = table("result-fields")
    keys = [row[0] for row in rows]
    assert keys == [f.key for f in fields.COMMON_RESULT_FIELDS + fields.PROFILE_RESULT_FIELDS]
    by_key = {row[0]: row for row in rows}
    for field in fields.COMMON_RESULT_FIELDS + fields.PROFILE_RESULT_FIELDS:
        assert by_key[field.key][1] == field.seed_name
        if field.source and not field.source.endswith("[]"):
            assert by_key[field.key][2] == field.source


def test_actions_table():
    rows = [
        line.strip("|").split("|")
        for line in README.splitlines()
        if line.startswith("| ") and "`/" in line and "|" in line[2:]
    ]
    documented = {
        cells[1].strip().strip("`"): (cells[0].strip(), cells[2].strip().strip("`"))
        for cells in rows
        if len(cells) >= 3 and cells[1].strip().strip("`") in ACTIONS
    }
    assert documented == {a.name: (a.seed_name, a.route) for a in ACTIONS.values()}


def _literal_patterns() -> list[re.Pattern[str]]:
    """Every string the layer can say, f-string parts as wildcards."""
    patterns = []
    for path in sorted((ROOT / "layers" / "shared" / "klaviyo_leads").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                patterns.append(re.escape(node.value.strip()))
            elif isinstance(node, ast.JoinedStr):
                patterns.append(
                    "".join(
                        re.escape(part.value) if isinstance(part, ast.Constant) else ".+?"
                        for part in node.values
                    ).strip()
                )
    # A pattern that is mostly wildcards (f"{a}{b}") would match any text.
    return [re.compile(p) for p in patterns if len(p.replace(".+?", "")) >= 12]


PATTERNS = _literal_patterns()


# "<Field>", "N" and "..." in the README stand for the parts the code fills in; a closing
# parenthesis may list variants ("(or phone number, or both)") rather than be part of it.
def _pieces(cell: str) -> list[str]:
    return [
        piece.replace("<Field>", "Email").replace(" N ", " 7 ").replace("...", "").strip()
        for piece in re.split(r" / |; ", cell)
    ]


REASONS = [row[1] for row in table("reasons")]


@pytest.mark.parametrize("cell", REASONS)
def test_each_documented_reason_is_one_the_code_gives(cell):
    whole, trimmed = _pieces(cell), _pieces(re.sub(r" \([^)]*\)$", "", cell))
    for full, short in zip(whole, trimmed, strict=False):
        assert any(p.fullmatch(full) or p.fullmatch(short) for p in PATTERNS), full

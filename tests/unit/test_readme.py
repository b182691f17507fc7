"""The documented tables are the code's tables: a change to one without the other fails here.

The README holds the input and output tables; every reason, too many for it, is in
docs/results.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.lead import fields
from klaviyo_leads.outcomes import Kind, Reason, every_reason

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS_DOC = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")


def table(marker: str, text: str = README) -> list[list[str]]:
    match = re.search(rf"<!-- {marker}\b.*?-->\n(.*?)<!-- /{marker} -->", text, re.S)
    assert match, f"no {marker} table"
    rows = [line for line in match.group(1).splitlines() if line.startswith("|")][2:]
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


def test_lead_fields_table():
    assert table("lead-fields") == [[f.key, f.seed_name, f.attribute] for f in fields.LEAD_FIELDS]


def test_variables_table():
    assert table("variables") == [[v.key, v.seed_name, v.meaning] for v in fields.VARIABLES]


def test_evidence_fields_table():
    actions_doc = (ROOT / "docs" / "actions.md").read_text(encoding="utf-8")
    assert table("evidence-fields", actions_doc) == [
        [e.key, e.seed_name, e.meaning] for e in fields.EVIDENCE_FIELDS
    ]


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


def _documented(reason: Reason) -> list[str]:
    """A reason as the table shows it: placeholders as <name>."""
    retry_after = " + Retry-After" if reason.kind is Kind.THROTTLED else ""
    return [
        reason.outcome.value,
        re.sub(r"\{(\w+)\}", r"<\1>", reason.text),
        "yes" if reason.retryable else "",
        f"{reason.http_status}{retry_after}",
    ]


def test_reasons_table_lists_every_reason_the_code_can_give():
    expected = [_documented(r) for r in every_reason().values()]
    rows = "\n".join("| " + " | ".join(row) + " |" for row in expected)
    assert table("reasons", RESULTS_DOC) == expected, f"docs/results.md should read:\n{rows}"


LAYER_SOURCE = "\n".join(
    path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "layers" / "shared" / "klaviyo_leads").rglob("*.py"))
)


@pytest.mark.parametrize("name", sorted(every_reason()))
def test_every_reason_is_given_somewhere(name):
    uses = re.findall(rf"\b{name}\b", LAYER_SOURCE)
    assert len(uses) > 1, f"{name} is declared but nothing gives it"


def test_the_readme_stays_short():
    assert len(README.splitlines()) <= 200, "the README is the front page; details go in docs/"


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_lead_somewhere(document: Path):
    text = document.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{document.name}: links that lead nowhere: {broken}"


def test_the_license_is_mit_and_the_readme_says_so() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## License\n\nMIT: see [LICENSE](LICENSE)." in readme


def test_make_conformance_is_described_by_what_it_covers_today() -> None:
    """The Makefile's help and the commands table say what the scenario covers (that it calls
    every operation is held by tests/integration/test_conformance.py) and what the probes
    measure, segment lag and the rate-limit windows included."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    development = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    help_text = " ".join(
        line.removeprefix("#").strip()
        for line in makefile.split("#   make conformance", 1)[1].split("\n#\n", 1)[0].splitlines()
    )
    (row,) = [line for line in development.splitlines() if line.startswith("| `make conformance`")]
    assert "events" in help_text and "unsubscribe" in help_text and "bulk import" in help_text
    assert "search and segment lag" in help_text
    assert "conformance.json" in help_text and "conformance.json" in row
    for covered in ("eleven actions", "bulk call", "search lag", "segment lag", "import timing"):
        assert covered in row, covered
    assert "rate-limit windows" in row
    assert "Not measured yet: segment lag" not in development


def test_reason_is_documented_on_success_too() -> None:
    """A success carries a reason when something is pending or only requested."""
    from klaviyo_leads.outcomes import CONSENT_PENDING, DELETION_REQUESTED, Outcome

    assert CONSENT_PENDING.outcome is DELETION_REQUESTED.outcome is Outcome.SUCCESS
    reason_row = next(row for row in table("result-fields") if row[0].strip("`") == "reason")
    assert "on a `success`" in reason_row[2]
    assert "double opt-in" in reason_row[2] and "deletion requested" in reason_row[2]
    assert "- **`reason`**: why, when the outcome is not `success`. On a `success`" in RESULTS_DOC


@pytest.mark.parametrize("doc", ["README.md", "docs/deploying.md"])
def test_no_command_puts_the_klaviyo_key_on_the_command_line(doc: str) -> None:
    """A key typed into a command stays in the shell's history (and, as an argument, in the
    process list): the key is read without echo and given to the AWS CLI as a file."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    commands = [line.split("#", 1)[0] for block in blocks for line in block.splitlines()]
    assert not [c for c in commands if re.search(r"""['"]pk_""", c)], doc
    secrets = [c for c in commands if "--secret-string" in c]
    assert secrets and all("--secret-string file://" in c for c in secrets), secrets
    assert any("read -rs" in c for c in commands), doc

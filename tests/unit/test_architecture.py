"""docs/architecture.md's checklists, held: "Adding an action" and "Adding a trigger".

Each step of the checklists is checked for every action of the action table and every trigger
of ``TRIGGERS``, so an action added with a step left out fails here with the step named; and
the action table stays the one registry of actions the layer reads.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from bench.mixes import _MIXES, MIX
from devtools.runner import DEMO_ORDER, SQS_EXPECTED
from klaviyo_leads.actions.table import ACTIONS
from klaviyo_leads.triggers.dispatch import TRIGGERS, event_kind

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "shared" / "klaviyo_leads"
TABLE = LAYER / "actions" / "table.py"
NAMES = frozenset(ACTIONS)


def _layer_modules() -> list[Path]:
    return sorted(LAYER.rglob("*.py"))


def _literals_naming_actions(tree: ast.AST) -> list[tuple[int, list[str]]]:
    """Dicts, sets, lists and tuples that hold three or more action names themselves."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            items: list[ast.expr | None] = list(node.keys)
        elif isinstance(node, ast.Set | ast.List | ast.Tuple):
            items = list(node.elts)
        else:
            continue
        named = [i.value for i in items if isinstance(i, ast.Constant) and i.value in NAMES]
        if len(named) >= 3:
            found.append((node.lineno, named))
    return found


def _asks_which_action(tree: ast.AST) -> list[int]:
    """Comparisons of an action's name with a literal one: ``action.name == "track_event"``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        by_name = any(isinstance(s, ast.Attribute) and s.attr == "name" for s in sides)
        literal = any(isinstance(s, ast.Constant) and s.value in NAMES for s in sides)
        if by_name and literal:
            lines.append(node.lineno)
    return lines


def test_the_action_table_is_the_only_registry_of_actions_in_the_layer():
    """Invariant: no layer module but ``actions/table.py`` lists actions, or branches on which
    action it runs (what differs between actions is a column of the table)."""
    offenders = []
    for path in _layer_modules():
        if path == TABLE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(LAYER)
        offenders += [
            f"{where}:{line} lists {names}" for line, names in _literals_naming_actions(tree)
        ]
        offenders += [f"{where}:{line} asks which action" for line in _asks_which_action(tree)]
    assert offenders == []


def test_the_registry_checks_can_fail():
    """The two checks above, on code that does what they forbid."""
    side_table = ast.parse('BULK = {"create_profile": a, "get_profiles": b, "track_event": c}')
    branch = ast.parse('if action.name == "track_event":\n    pass')
    assert _literals_naming_actions(side_table) == [
        (1, ["create_profile", "get_profiles", "track_event"])
    ]
    assert _asks_which_action(branch) == [1]


def _stack_actions() -> dict:
    source = (ROOT / "stack" / "stack.yaml").read_text(encoding="utf-8")
    table = source[source.index("Actions:") : source.index("\nAWSTemplateFormatVersion")]
    return yaml.safe_load(table)["Actions"]


def _samples(name: str) -> dict[str, list[Path]]:
    """The action's sample events by the trigger their file names say (``api-rest.json``)."""
    by_kind: dict[str, list[Path]] = {}
    for path in sorted((ROOT / "events" / name).glob("*.json")):
        by_kind.setdefault(path.stem.split("-")[0], []).append(path)
    return by_kind


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_action_has_every_step_of_the_checklist(name):
    action = ACTIONS[name]
    # 1. Its module, with its one-lead path and, beside it, its batch path.
    step1 = "step 1: actions/<name>.py with <name>(ctx, lead)"
    assert action.run.__name__ == name, step1
    assert action.run.__module__.startswith("klaviyo_leads.actions."), step1
    if action.run_batch is not None:
        assert action.run_batch.__name__ == f"{name}_batch", "step 1: <name>_batch(batch)"
        same_place = action.run_batch.__module__.rsplit(".", 1)[0]
        assert same_place == action.run.__module__.rsplit(".", 1)[0], "step 1: side by side"
    # 4. Its function.
    app = (ROOT / "functions" / name / "app.py").read_text(encoding="utf-8")
    assert f'handler_for("{name}")' in app, "step 4: functions/<name>/app.py"
    # 5. Its row in the stack's table.
    assert name in _stack_actions(), "step 5: the Actions table of stack/stack.yaml"
    # 6. A sample of every trigger, each told apart as that trigger.
    samples = _samples(name)
    assert sorted(samples) == sorted(TRIGGERS), f"step 6: make events (events/{name}/)"
    for kind, paths in samples.items():
        for path in paths:
            assert event_kind(json.loads(path.read_text(encoding="utf-8"))) == kind, path.name
    # 7. Its docs.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = rf"^\| {re.escape(action.seed_name)} \| `{name}` \| `{action.route}` \|"
    assert re.search(row, readme, re.M), "step 7: README's action table"
    actions_doc = (ROOT / "docs" / "actions.md").read_text(encoding="utf-8")
    assert f"| {action.seed_name} |" in actions_doc, "step 7: docs/actions.md's rows"
    # 8. The demo and the benchmark run it.
    assert name in DEMO_ORDER and name in SQS_EXPECTED, "step 8: devtools/runner.py's demo"
    assert name in MIX and name in _MIXES, "step 8: bench/mixes.py"


def test_the_stack_and_the_layer_have_the_same_actions():
    assert sorted(_stack_actions()) == sorted(NAMES)
    functions = {p.parent.name for p in (ROOT / "functions").glob("*/app.py")}
    assert functions >= NAMES


def test_the_checklists_name_what_the_test_checks():
    """The doc's steps and the code's names stay in step: a renamed file or table shows here."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for named in (
        "actions/table.py",
        "actions/<name>.py",
        "<name>_batch(batch)",
        "TRIGGERS",
        "triggers/dispatch.py",
        "functions/<name>/app.py",
        "stack/stack.yaml",
        "devtools/events.py",
        "make events",
        "outcomes.py",
    ):
        assert named in doc, named
    for path in ("actions/table.py", "triggers/dispatch.py", "outcomes.py"):
        assert (LAYER / path).is_file(), path


MAX_MODULE_LINES = 500


def test_no_layer_module_is_a_whole_feature():
    """A module holds one concern: past about 500 lines it is a folder of modules."""
    long = {
        str(path.relative_to(LAYER)): lines
        for path in _layer_modules()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}

"""cfn-lint, with the serverless rules, finds nothing in template.yaml.

The rules ignored are listed, each with its reason, where they are ignored (stack/stack.yaml;
test_template_invariants.py keeps that list from growing unnoticed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from devtools.aws import load_template
from tests.template.cfn_template import ROOT, TEMPLATE

SERVERLESS_RULES = "cfn_lint_serverless.rules"


def cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    """Run the cfn-lint of the interpreter running the tests (the project's virtualenv)."""
    beside_python = Path(sys.executable).parent / "cfn-lint"
    executable = str(beside_python) if beside_python.exists() else shutil.which("cfn-lint")
    assert executable, "cfn-lint is not installed (make venv)"
    return subprocess.run(
        [executable, str(template), "-a", SERVERLESS_RULES, "--format", "parseable"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_template_is_lint_clean() -> None:
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_serverless_rules_are_applied(tmp_path: Path) -> None:
    """A clean result means something only if the serverless rules ran: break one on purpose."""
    broken: dict[str, Any] = load_template()
    function = broken["Resources"]["CreateProfileFunction"]["Properties"]
    del function["MemorySize"]  # ES1005: Lambda functions should set their memory explicitly
    path = tmp_path / "template.json"
    path.write_text(json.dumps(broken))

    result = cfn_lint(path)

    assert result.returncode != 0
    assert "ES1005" in result.stdout
    assert "CreateProfileFunction" in result.stdout

"""make build's output (devtools/sam_build.py): SAM's warning for each function without a
requirements.txt is dropped, and the next step suggested is make deploy."""

from __future__ import annotations

import sys

import pytest

from devtools import sam_build

SAMS_OUTPUT = """\
Building codeuri: functions/create_profile runtime: python3.12 architecture: arm64
requirements.txt file not found. Continuing the build without dependencies.
Building codeuri: functions/get_result runtime: python3.12 architecture: arm64
requirements.txt file not found. Continuing the build without dependencies.
Build Succeeded

Built Artifacts  : .aws-sam/build

Commands you can use next
=========================
[*] Validate SAM template: sam validate
[*] Deploy: sam deploy --guided

"""


def fake_sam(status: int) -> list[str]:
    script = f"import sys; sys.stdout.write({SAMS_OUTPUT!r}); sys.exit({status})"
    return [sys.executable, "-c", script]


def test_the_warnings_and_sams_next_steps_are_dropped_and_make_deploy_suggested(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sam_build.main(["--next", "make deploy ENV=dev", "--", *fake_sam(0)]) == 0
    out = capsys.readouterr().out
    assert "requirements.txt" not in out and "sam deploy" not in out
    assert "Build Succeeded" in out and "Built Artifacts  : .aws-sam/build" in out
    assert out.count("Building codeuri") == 2
    assert out.rstrip().splitlines()[-1] == "Next: make deploy ENV=dev"


def test_a_failed_build_keeps_its_status_and_suggests_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sam_build.main(["--next", "make deploy ENV=dev", "--", *fake_sam(3)]) == 3
    assert "Next:" not in capsys.readouterr().out

"""template.yaml is what stack/ renders, and the renderer does what stack/stack.yaml says.

The source writes each action's resources once; the table of actions at its top is the only
list of actions in the stack. It must agree with the functions and with the shared layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stack.render import load_actions, render_text
from tests.template.cfn_template import ACTIONS, ROOT, TEMPLATE


def test_template_yaml_is_rendered_from_stack() -> None:
    assert TEMPLATE.read_text(encoding="utf-8") == render_text(), "run `make template`"


# Functions that are not actions (no row in the table): written out in stack/stack.yaml.
OTHER_FUNCTIONS = {"get_result", "lead_files", "mirror", "trail_writer"}


def test_actions_have_their_function_code_and_layer_action() -> None:
    from klaviyo_leads.actions.table import ACTIONS as LAYER_ACTIONS

    directories = {p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").is_file()}
    assert directories == {a.name for a in ACTIONS} | OTHER_FUNCTIONS
    assert set(LAYER_ACTIONS) == {a.name for a in ACTIONS}
    for action in ACTIONS:
        assert LAYER_ACTIONS[action.name].route == action.route, action.name


SOURCE = """\
Actions:
  create_profile: {size: Small}
  add_profile_to_list: {size: Bulk}
Resources:
  Shared:
    Type: AWS::SNS::Topic
  ${Action}Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub ${AWS::StackName}-${route}
  ${Action}Role:
    Type: AWS::IAM::Role
    Properties:
      Description: ${name} takes ${size} batches
      Arn: !GetAtt ${Action}Queue.Arn
  Api:
    Type: AWS::Serverless::Api
    Properties:
      DefinitionBody: !Include api.yaml
"""
API = """\
paths:
  /${route}:
    post:
      summary: Run ${name}
"""


def rendered(tmp_path: Path, source: str = SOURCE) -> str:
    (tmp_path / "stack.yaml").write_text(source)
    (tmp_path / "api.yaml").write_text(API)
    return render_text(tmp_path / "stack.yaml")


def test_a_per_action_key_is_written_once_per_row_action_by_action(tmp_path: Path) -> None:
    text = rendered(tmp_path)
    template = yaml.safe_load(text.replace("!", ""))  # the tags are checked below
    assert list(template["Resources"]) == [
        "Shared",
        "CreateProfileQueue",
        "CreateProfileRole",
        "AddProfileToListQueue",
        "AddProfileToListRole",
        "Api",
    ]
    role = template["Resources"]["AddProfileToListRole"]["Properties"]
    assert role["Description"] == "add_profile_to_list takes Bulk batches"
    assert "QueueName: !Sub ${AWS::StackName}-create-profile" in text
    assert "Arn: !GetAtt AddProfileToListQueue.Arn" in text
    paths = template["Resources"]["Api"]["Properties"]["DefinitionBody"]["paths"]
    assert paths == {
        "/create-profile": {"post": {"summary": "Run create_profile"}},
        "/add-profile-to-list": {"post": {"summary": "Run add_profile_to_list"}},
    }
    assert "Actions" not in template


def test_a_placeholder_outside_a_per_action_key_is_an_error(tmp_path: Path) -> None:
    source = SOURCE.replace("Type: AWS::SNS::Topic", "Type: AWS::SNS::Topic\n    Name: ${route}")
    with pytest.raises(ValueError, match=r"Resources/Shared/Name: \$\{route\} outside"):
        rendered(tmp_path, source)


WIDGETS = """\
Actions:
  create_profile: {size: Small}
  add_profile_to_list: {size: Bulk}
Resources:
  ${Action}Alarm:
    Type: AWS::CloudWatch::Alarm
  Board:
    Type: AWS::CloudWatch::Dashboard
    Properties:
      DashboardBody: !SubJson
        widgets:
          - type: alarm
            properties:
              alarms:
                - ${${Action}Alarm.Arn}
                - ${Shared.Arn}
          - type: text
            properties: {markdown: "${name}"}
          - type: metric
            properties:
              title: ${name}
              region: ${AWS::Region}
              metrics:
                - [Space, Calls, action, "${name}", {label: "${size} calls"}]
          - type: metric
            properties:
              title: All actions
              metrics:
                - [Space, Calls, action, "${name}"]
"""


def test_a_per_action_list_item_is_written_once_per_row_action_by_action(tmp_path: Path) -> None:
    text = rendered(tmp_path, WIDGETS)
    body = text.split("DashboardBody: !Sub |-\n", 1)[1]
    widgets = json.loads(body.replace("\n        ", "\n"))["widgets"]
    # The alarm widget and the last one are written once (their placeholders are in the lists
    # they hold, whose items repeat); the text and metric widgets, which name the action
    # themselves, once per action, in turn.
    types = ["alarm", "text", "metric", "text", "metric", "metric"]
    assert [w["type"] for w in widgets] == types
    assert widgets[0]["properties"]["alarms"] == [
        "${CreateProfileAlarm.Arn}",
        "${AddProfileToListAlarm.Arn}",
        "${Shared.Arn}",
    ]
    assert [widgets[i]["properties"]["markdown"] for i in (1, 3)] == [
        "create_profile",
        "add_profile_to_list",
    ]
    metrics = [widgets[i]["properties"]["metrics"] for i in (2, 4, 5)]
    assert metrics == [
        [["Space", "Calls", "action", "create_profile", {"label": "Small calls"}]],
        [["Space", "Calls", "action", "add_profile_to_list", {"label": "Bulk calls"}]],
        [
            ["Space", "Calls", "action", "create_profile"],
            ["Space", "Calls", "action", "add_profile_to_list"],
        ],
    ]
    assert widgets[2]["properties"]["region"] == "${AWS::Region}"  # left to CloudFormation


def test_sub_json_is_one_list_item_per_line(tmp_path: Path) -> None:
    """A diff of template.yaml shows which widget changed."""
    text = rendered(tmp_path, WIDGETS)
    body_lines = text.split("DashboardBody: !Sub |-\n", 1)[1].splitlines()
    assert body_lines[0].strip() == '{"widgets": ['
    starts = [line.strip()[:10] for line in body_lines[1:7]]
    assert starts == ['{"type":"a'] + ['{"type":"t', '{"type":"m'] * 2 + ['{"type":"m']
    assert body_lines[7].strip() == "]}"


def test_sub_json_refuses_intrinsics(tmp_path: Path) -> None:
    source = WIDGETS.replace("region: ${AWS::Region}", "region: !Ref AWS::Region")
    with pytest.raises(ValueError, match=r"write \$\{\.\.\.\} instead"):
        rendered(tmp_path, source)


def test_the_table_is_the_sources() -> None:
    assert [a.name for a in load_actions()] == [a.name for a in ACTIONS]

"""template.yaml as data: a loader for CloudFormation YAML, SAM's transform, and the names of
the six action blocks. Shared by the infrastructure tests; no AWS account involved.
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto import mock_aws
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
ARTIFACT_BUCKET = "lead-actions-artifacts"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:klaviyo/api-key-AbCdEf"


@dataclass(frozen=True)
class Action:
    """One lead action and the names the template gives its resources."""

    name: str  # add_profile_to_list
    route: str  # /add-profile-to-list

    @property
    def prefix(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def function(self) -> str:
        return f"{self.prefix}Function"

    @property
    def role(self) -> str:
        return f"{self.prefix}FunctionRole"

    @property
    def queue(self) -> str:
        return f"{self.prefix}Queue"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}DeadLetterQueue"

    @property
    def event_dead_letter_queue(self) -> str:
        return f"{self.prefix}EventDeadLetterQueue"

    @property
    def intake_role(self) -> str:
        return f"{self.prefix}IntakeRole"

    @property
    def log_group(self) -> str:
        return f"{self.prefix}LogGroup"

    @property
    def rule(self) -> str:
        """The EventBridge rule SAM generates for the function's `Lead` event."""
        return f"{self.function}Lead"

    @property
    def async_route(self) -> str:
        return f"{self.route}/async"


# The bundle's contract, section 1.
ACTIONS = (
    Action("add_profile_to_list", "/add-profile-to-list"),
    Action("create_profile", "/create-profile"),
    Action("get_profiles", "/get-profiles"),
    Action("get_segment_profiles", "/get-segment-profiles"),
    Action("update_profile", "/update-profile"),
    Action("subscribe_profile_to_list", "/subscribe-profile-to-list"),
)


def load_samconfig() -> dict[str, Any]:
    return tomllib.loads(SAMCONFIG.read_text())


def samconfig_environments() -> list[str]:
    return sorted(load_samconfig().keys() - {"version"})


# --- template.yaml as data -------------------------------------------------------------------


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML loader that turns short-form intrinsics (!Ref, !GetAtt, ...) into their JSON form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CloudFormationLoader)


# --- SAM's transform ----------------------------------------------------------------------------


def with_s3_code(template: dict[str, Any]) -> dict[str, Any]:
    """The template with S3 locations for CodeUri and ContentUri, as `sam package` leaves it."""
    packaged = copy.deepcopy(template)
    for logical_id, resource in packaged["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/{logical_id}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = f"s3://{ARTIFACT_BUCKET}/{logical_id}.zip"
    return packaged


def sam_transform(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """Plain CloudFormation from the SAM template, as `sam deploy` would submit it."""
    assert os.environ.get("AWS_ACCESS_KEY_ID") == "testing", "placeholder credentials first"
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        return transform(with_s3_code(template), parameters, ManagedPolicyLoader(iam))


# --- Helpers for reading templates ---------------------------------------------------------------


def resources_of_type(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


def function_properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """A SAM function's properties with the template's Globals applied (SAM's merge rules)."""
    merged = copy.deepcopy(template.get("Globals", {}).get("Function", {}))
    own = template["Resources"][logical_id]["Properties"]
    for key, value in own.items():
        if key == "Environment":
            variables = merged.get("Environment", {}).get("Variables", {})
            variables.update(value.get("Variables", {}))
            merged["Environment"] = {"Variables": variables}
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merged[key] + value
        else:
            merged[key] = value
    return merged


def resolve_conditionals(value: Any, conditions: dict[str, bool]) -> Any:
    """Evaluate Fn::If (and drop AWS::NoValue) for the given condition values."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return resolve_conditionals(when_true if conditions[name] else when_false, conditions)
        resolved = {k: resolve_conditionals(v, conditions) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v != {"Ref": "AWS::NoValue"}}
    if isinstance(value, list):
        items = [resolve_conditionals(v, conditions) for v in value]
        return [v for v in items if v != {"Ref": "AWS::NoValue"}]
    return value


def statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy_document["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]

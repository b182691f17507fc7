"""template.yaml as data, the names it gives each action's resources, and helpers to read it.

Shared by the infrastructure tests; no AWS account involved. The actions are the template
source's table (stack/stack.yaml), so a new row is tested like the others.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.render import load_actions

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"


@dataclass(frozen=True)
class Action:
    """One lead action and the names the template gives its resources."""

    name: str  # add_profile_to_list
    prefix: str  # AddProfileToList
    route: str  # /add-profile-to-list
    batch_size: str  # the parameter that sets its SQS batch size

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
    def rule(self) -> str:
        """The EventBridge rule SAM generates for the function's `Lead` event."""
        return f"{self.function}Lead"

    @property
    def async_route(self) -> str:
        return f"{self.route}/async"


ACTIONS = tuple(
    Action(a.name, a.prefix, f"/{a.route}", a.columns["batch_size"]) for a in load_actions()
)


def samconfig() -> dict[str, Any]:
    return tomllib.loads(SAMCONFIG.read_text())


def samconfig_environments() -> list[str]:
    return sorted(samconfig().keys() - {"version"})


def parameter_values(template: dict[str, Any], environment: str) -> dict[str, str]:
    """The stack parameters a samconfig.toml environment deploys with (defaults filled in)."""
    deploy = samconfig()[environment].get("deploy", {}).get("parameters", {})
    values = default_values(template)
    overrides = shlex.split(deploy.get("parameter_overrides", ""))
    values.update(item.split("=", 1) for item in overrides)
    return values


def default_values(template: dict[str, Any]) -> dict[str, str]:
    return {n: str(p["Default"]) for n, p in template["Parameters"].items() if "Default" in p}


def condition_values(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, bool]:
    """Every condition of the template, for these parameter values (defaults filled in)."""
    values = {**default_values(template), **parameters}
    conditions = template.get("Conditions", {})

    def evaluate(expression: Any) -> Any:
        if not isinstance(expression, dict):
            return str(expression)
        ((function, argument),) = expression.items()
        if function == "Ref":
            return values[argument]
        if function == "Fn::Join":  # a CommaDelimitedList's value is the text it was given
            delimiter, items = argument
            parts = [evaluate(i) for i in items] if isinstance(items, list) else [evaluate(items)]
            return delimiter.join(p.replace(",", delimiter) for p in parts)
        if function in ("Condition", "Fn::Condition"):
            return evaluate(conditions[argument])
        if function == "Fn::Equals":
            return evaluate(argument[0]) == evaluate(argument[1])
        if function == "Fn::Not":
            return not evaluate(argument[0])
        if function == "Fn::And":
            return all(evaluate(a) for a in argument)
        if function == "Fn::Or":
            return any(evaluate(a) for a in argument)
        raise ValueError(f"cannot evaluate {function}")

    return {name: bool(evaluate(expression)) for name, expression in conditions.items()}


def created(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The resources CloudFormation creates for these parameter values."""
    conditions = condition_values(template, parameters)
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if conditions.get(resource.get("Condition", ""), True)
    }


def resources_of_type(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


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

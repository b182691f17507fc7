"""The dashboard graphs what the functions emit and what the stack holds.

CloudWatch draws an empty graph, and says nothing, for a metric nobody writes: a widget that
spells a metric, a dimension or a namespace otherwise than the code does, or names a queue that
is not the stack's, goes unnoticed until the incident it was meant for. So every metric of
every widget of the dashboard (as SAM translates the template: moto cannot build it, see
``devtools.aws.MOTO_CANNOT_BUILD``) is held against:

- the functions' own metrics: a name the shared layer emits (read from its source: every
  ``count("…")``, ``_counts["…"]`` and ``_OUTCOME_METRIC`` value), under the namespace and the
  dimension set of the EMF document a handler really prints (captured here);
- AWS metrics: a metric of that namespace, its one dimension naming a resource of the stack of
  the type the namespace is about.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import re
from typing import Any

import pytest

from devtools.lambda_events import LambdaContext, load_handler
from devtools.memory_dynamodb import memory_ledger
from tests.template.cfn_template import ACTIONS, ROOT, Action, resources_of_type

LAYER = ROOT / "layers" / "shared" / "klaviyo_leads"
ROW_WIDTH = 24  # a dashboard's columns: widgets without x and y flow into rows this wide

# AWS namespaces the dashboard may use: the dimension, the resource type it names (by Ref, or
# by this attribute), and the metrics it may show.
AWS_METRICS: dict[str, tuple[str, str, str | None, set[str]]] = {
    "AWS/SQS": (
        "QueueName",
        "AWS::SQS::Queue",
        "QueueName",
        {"ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible"},
    ),
    "AWS/Lambda": (
        "FunctionName",
        "AWS::Lambda::Function",
        None,
        {"Duration", "Errors", "Throttles", "Invocations", "ConcurrentExecutions"},
    ),
}
_REFERENCE = re.compile(r"\$\{([^}]+)\}")


# --- What the functions emit ----------------------------------------------------------------------


def layer_metric_names() -> set[str]:
    """Every metric name the layer's source emits: ``count("X")``, ``_counts["X"]``, and the
    values of ``_OUTCOME_METRIC`` (the outcome of each lead)."""
    names: set[str] = set()
    for path in LAYER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "count"
                and node.args
            ):
                names |= _text(node.args[0])
            elif isinstance(node, ast.Subscript) and _is_name(node.value, "_counts"):
                names |= _text(node.slice)
            elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(_is_name(t, "_OUTCOME_METRIC") for t in targets):
                    for value in node.value.values:
                        names |= _text(value)
    return names


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _text(node: ast.AST) -> set[str]:
    return {node.value} if isinstance(node, ast.Constant) and isinstance(node.value, str) else set()


@pytest.fixture(scope="module")
def emitted() -> dict[str, Any]:
    """The EMF document of a real handler invocation: ``get_profiles`` called directly with a
    lead that is not an object (an error result, no Klaviyo call, no AWS)."""
    from klaviyo_leads.config import Settings
    from klaviyo_leads.handlers import actions as entrypoint
    from klaviyo_leads.klaviyo.client import KlaviyoClient
    from klaviyo_leads.observability import metrics
    from klaviyo_leads.runtime import Runtime

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
        settings = Settings()
        client = KlaviyoClient(settings.base_url, settings.api_revision, lambda force: "pk_x")
        entrypoint.reset_runtime(Runtime(settings, client, ledger=memory_ledger()))
        metrics.clear_metrics()
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                load_handler("get_profiles")("not a lead", LambdaContext.for_action("get_profiles"))
        finally:
            entrypoint.reset_runtime()
    documents = [json.loads(line) for line in printed.getvalue().splitlines() if '"_aws"' in line]
    (document,) = [d for d in documents if "LeadsReceived" in d]
    return document


@pytest.fixture(scope="module")
def custom(emitted: dict[str, Any]) -> dict[str, Any]:
    """Namespace, dimension names and their values, metric names: what the layer writes."""
    (directive,) = emitted["_aws"]["CloudWatchMetrics"]
    (dimensions,) = directive["Dimensions"]
    return {
        "namespace": directive["Namespace"],
        "dimensions": dimensions,
        "service": emitted["service"],
        "names": layer_metric_names(),
        "captured": {m["Name"] for m in directive["Metrics"]},
    }


def test_the_emitted_document_is_what_the_dashboard_relies_on(
    custom: dict[str, Any], emitted: dict[str, Any], sam_template: dict[str, Any]
) -> None:
    """One namespace (what the template says too), dimensions ``action`` and ``service``, and
    metric names the source scan finds: so the scan sees the sites that really emit."""
    from klaviyo_leads.observability import NAMESPACE, SERVICE

    environment = sam_template["Globals"]["Function"]["Environment"]["Variables"]
    assert custom["namespace"] == NAMESPACE == environment["POWERTOOLS_METRICS_NAMESPACE"]
    assert sorted(custom["dimensions"]) == ["action", "service"]
    assert custom["service"] == SERVICE == environment["POWERTOOLS_SERVICE_NAME"]
    assert emitted["action"] == "get_profiles"
    assert custom["captured"] >= {"LeadsReceived", "LeadErrored"}
    assert custom["captured"] <= custom["names"]
    assert {"KlaviyoCalls", "KlaviyoThrottled", "PacerWaitSeconds"} <= custom["names"]


# --- The dashboard as CloudFormation gets it ---------------------------------------------------


def dashboard(translated: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The dashboard's body, each ``${X}`` of its !Sub written ``<X>``; and every X."""
    (resource,) = resources_of_type(translated, "AWS::CloudWatch::Dashboard").values()
    text = resource["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(text, str)
    return json.loads(_REFERENCE.sub(r"<\1>", text)), _REFERENCE.findall(text)


def metric_rows(widget: dict[str, Any]) -> list[dict[str, Any]]:
    """A metric widget's rows as {namespace, name, dimensions, stat}."""
    rows = []
    for row in widget["properties"].get("metrics", []):
        options = row[-1] if isinstance(row[-1], dict) else {}
        fields = row[:-1] if options else row
        namespace, name, *pairs = fields
        rows.append(
            {
                "namespace": namespace,
                "name": name,
                "dimensions": dict(zip(pairs[::2], pairs[1::2], strict=True)),
                "stat": options.get("stat", widget["properties"].get("stat")),
            }
        )
    return rows


def problems(translated: dict[str, Any], custom: dict[str, Any]) -> list[str]:
    """What in the dashboard names a metric nobody writes, or something the stack lacks."""
    body, references = dashboard(translated)
    resources = translated["Resources"]
    found = [
        f"${{{r}}} names nothing in the stack"
        for r in references
        if r.split(".")[0] not in resources and r not in {"AWS::Region", "AWS::StackName"}
    ]
    for widget in body["widgets"]:
        for row in metric_rows(widget):
            where = f"{widget['properties'].get('title')}: {row['name']}"
            if row["namespace"] == custom["namespace"]:
                found += _custom_problems(row, custom, where)
            elif row["namespace"] in AWS_METRICS:
                found += _aws_problems(row, resources, where)
            else:
                found.append(f"{where}: namespace {row['namespace']} is neither ours nor known")
    return found


def _custom_problems(row: dict[str, Any], custom: dict[str, Any], where: str) -> list[str]:
    found = []
    if row["name"] not in custom["names"]:
        found.append(f"{where}: the functions emit no such metric")
    if sorted(row["dimensions"]) != sorted(custom["dimensions"]):
        found.append(f"{where}: dimensions {sorted(row['dimensions'])} are not the emitted ones")
    elif row["dimensions"]["service"] != custom["service"]:
        found.append(f"{where}: service {row['dimensions']['service']} is not the emitted one")
    elif row["dimensions"]["action"] not in {a.name for a in ACTIONS}:
        found.append(f"{where}: action {row['dimensions']['action']} is no action")
    return found


def _aws_problems(row: dict[str, Any], resources: dict[str, Any], where: str) -> list[str]:
    dimension, resource_type, attribute, names = AWS_METRICS[row["namespace"]]
    found = [] if row["name"] in names else [f"{where}: not a {row['namespace']} metric here"]
    if list(row["dimensions"]) != [dimension]:
        return [*found, f"{where}: dimensions {list(row['dimensions'])}, not [{dimension}]"]
    reference = row["dimensions"][dimension]
    logical_id, _, named = reference.strip("<>").partition(".")
    if not (reference.startswith("<") and named == (attribute or "")):
        found.append(f"{where}: {dimension} {reference} is not a {resource_type}'s")
    elif resources.get(logical_id, {}).get("Type") != resource_type:
        found.append(f"{where}: {logical_id} is not a {resource_type} of the stack")
    return found


def test_every_metric_is_emitted_or_of_a_resource_of_the_stack(
    translated: dict[str, Any], custom: dict[str, Any]
) -> None:
    assert problems(translated, custom) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('"KlaviyoThrottled"', '"KlaviyoThrottles"', "the functions emit no such metric"),
        ('"service"', '"Service"', "are not the emitted ones"),
        ('"klaviyo-lead-actions"', '"klaviyo-leads"', "is not the emitted one"),
        ('"KlaviyoLeadActions"', '"KlaviyoLeads"', "is neither ours nor known"),
        ("DeadLetterQueue.QueueName}", "DeadLetterQueue.Arn}", "is not a AWS::SQS::Queue's"),
        ("${GetProfilesFunction}", "${GetProfilesFunctionRole}", "is not a AWS::Lambda::Function"),
        ("${GetProfilesFunction}", "${GetProfileFunction}", "names nothing in the stack"),
    ],
)
def test_a_widget_that_graphs_nothing_is_caught(
    translated: dict[str, Any], custom: dict[str, Any], old: str, new: str, problem: str
) -> None:
    broken = copy.deepcopy(translated)
    (resource,) = resources_of_type(broken, "AWS::CloudWatch::Dashboard").values()
    body = resource["Properties"]["DashboardBody"]
    assert old in body["Fn::Sub"]
    body["Fn::Sub"] = body["Fn::Sub"].replace(old, new, 1)
    assert any(problem in p for p in problems(broken, custom))


# --- What it shows --------------------------------------------------------------------------------


def rows_of(action: Action, body: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The action's widgets (those that graph its metrics or resources), as metric rows."""
    own = {action.function, action.queue, action.dead_letter_queue, action.event_dead_letter_queue}
    found = []
    for widget in body["widgets"]:
        rows = metric_rows(widget)
        values = {v.strip("<>").split(".")[0] for r in rows for v in r["dimensions"].values()}
        if values & ({action.name} | own):
            assert values <= {action.name, "klaviyo-lead-actions"} | own, widget
            found.append(rows)
    return found


def sums(*names: str) -> set[tuple[str, str, str]]:
    return {("KlaviyoLeadActions", name, "Sum") for name in names}


def test_each_action_has_leads_klaviyo_pacing_queue_and_duration(
    translated: dict[str, Any],
) -> None:
    from klaviyo_leads.observability import _OUTCOME_METRIC

    body, _ = dashboard(translated)
    for action in ACTIONS:
        widgets = [
            {(r["namespace"], r["name"], r["stat"]) for r in rows} for rows in rows_of(action, body)
        ]
        shown = {(n, s) for widget in widgets for (_, n, s) in widget}
        # Leads by outcome in one graph, Klaviyo's answers in another.
        outcomes = sums("LeadsReceived", *_OUTCOME_METRIC.values())
        assert any(widget >= outcomes for widget in widgets), action.name
        calls = sums("KlaviyoCalls", "KlaviyoThrottled")
        assert any(widget >= calls for widget in widgets), action.name
        assert ("PacerWaitSeconds", "Sum") in shown, action.name
        assert ("Duration", "p99") in shown, action.name
        queues = {
            (r["name"], r["dimensions"]["QueueName"].strip("<>").split(".")[0])
            for rows in rows_of(action, body)
            for r in rows
            if r["namespace"] == "AWS/SQS"
        }
        assert ("ApproximateAgeOfOldestMessage", action.queue) in queues, action.name
        assert ("ApproximateNumberOfMessagesVisible", action.dead_letter_queue) in queues


def test_each_actions_widgets_make_rows_of_their_own(translated: dict[str, Any]) -> None:
    """Without x and y, widgets flow left to right: a full row per action keeps its graphs
    together, under its heading."""
    body, _ = dashboard(translated)
    widgets = body["widgets"]
    assert widgets[0]["type"] == "alarm" and widgets[0]["width"] == ROW_WIDTH
    starts = [i for i, w in enumerate(widgets) if w["type"] == "text"]
    assert len(starts) == len(ACTIONS)
    for action, start, end in zip(ACTIONS, starts, [*starts[1:], len(widgets)], strict=True):
        assert action.name in widgets[start]["properties"]["markdown"]
        assert widgets[start]["width"] == ROW_WIDTH
        graphs = widgets[start + 1 : end]
        assert sum(w["width"] for w in graphs) == ROW_WIDTH, action.name
        assert len(rows_of(action, {"widgets": graphs})) == len(graphs), action.name


def test_the_alarm_widget_shows_every_alarm_always_there(translated: dict[str, Any]) -> None:
    """All but the webhook's, which exists only with the webhook (a !Sub cannot leave it out)."""
    body, _ = dashboard(translated)
    shown = {a.strip("<>") for a in body["widgets"][0]["properties"]["alarms"]}
    alarms = resources_of_type(translated, "AWS::CloudWatch::Alarm")
    always = {logical_id for logical_id, alarm in alarms.items() if "Condition" not in alarm}
    assert len(always) == len(alarms) - 1
    assert shown == {f"{alarm}.Arn" for alarm in always}


def test_the_outputs_link_to_the_dashboard(translated: dict[str, Any]) -> None:
    (dashboard_id,) = resources_of_type(translated, "AWS::CloudWatch::Dashboard")
    url = translated["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?")
    assert url.endswith(f"#dashboards/dashboard/${{{dashboard_id}}}")
    name = translated["Resources"][dashboard_id]["Properties"]["DashboardName"]
    assert name == {"Fn::Sub": "${AWS::StackName}"}

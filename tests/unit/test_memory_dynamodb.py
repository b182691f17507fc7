"""The in-memory DynamoDB answers as moto's DynamoDB does, call for call.

Each scenario below runs the same calls against both and records every answer (or error code,
cancellation reasons and returned items included); the two transcripts must be equal. The
calls are the ones the layer makes (the create ledger, the results store) and Powertools'
idempotency layer makes, plus the corners of the expression grammar they rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devtools.memory_dynamodb import MemoryDynamoDB

TABLE = "records"


def _fresh_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _transcript(client: Any, table: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    out: list[Any] = []
    for operation, params in calls:
        params = _with_table(params, table)
        try:
            answer = getattr(client, operation)(**params)
            answer.pop("ResponseMetadata", None)
            answer.pop("ConsumedCapacity", None)
            answer.pop("ItemCollectionMetrics", None)
            out.append(("ok", _normal(answer)))
        except ClientError as error:
            code = error.response["Error"]["Code"]
            reasons = error.response.get("CancellationReasons")
            if reasons is not None:
                reasons = [{"Code": r.get("Code"), "Item": _normal(r.get("Item"))} for r in reasons]
            out.append(("error", code, _normal(error.response.get("Item")), reasons))
    return out


def _with_table(value: Any, table: str) -> Any:
    if isinstance(value, dict):
        return {
            (table if k == TABLE else k): (table if k == "TableName" else _with_table(v, table))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_with_table(v, table) for v in value]
    return value


def _normal(value: Any) -> Any:
    """Sets come back in any order."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in ("SS", "NS") else _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def S(v: str) -> dict[str, str]:
    return {"S": v}


def N(v: float) -> dict[str, str]:
    return {"N": str(v)}


POWERTOOLS_PUT = (
    "attribute_not_exists(#id) OR #expiry < :now OR "
    "(#status = :inprogress AND attribute_exists(#in_progress_expiry) AND "
    "#in_progress_expiry < :now_in_millis)"
)
POWERTOOLS_NAMES = {
    "#id": "id",
    "#expiry": "expiration",
    "#in_progress_expiry": "in_progress_expiration",
    "#status": "status",
}


def _powertools_put(key: str, now: int, status: str = "INPROGRESS") -> dict[str, Any]:
    return {
        "TableName": TABLE,
        "Item": {
            "id": S(key),
            "expiration": N(now + 3600),
            "status": S(status),
            "in_progress_expiration": N(now * 1000 + 5000),
        },
        "ConditionExpression": POWERTOOLS_PUT,
        "ExpressionAttributeNames": POWERTOOLS_NAMES,
        "ExpressionAttributeValues": {
            ":now": N(now),
            ":now_in_millis": N(now * 1000),
            ":inprogress": S("INPROGRESS"),
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def _take(items: list[tuple[str, str]], owner: str, now: int) -> dict[str, Any]:
    return {
        "TransactItems": [
            {
                "Put": {
                    "TableName": TABLE,
                    "Item": {"id": S(key), "owner": S(owner), "expiration": N(now + 100)},
                    "ConditionExpression": (
                        "attribute_not_exists(id) OR expiration < :now OR #owner = :me"
                    ),
                    "ExpressionAttributeNames": {"#owner": "owner"},
                    "ExpressionAttributeValues": {":now": N(now), ":me": S(owner)},
                    "ReturnValuesOnConditionCheckFailure": kind,
                }
            }
            for key, kind in items
        ]
    }


SCENARIOS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "powertools_idempotency_records": [
        ("put_item", _powertools_put("k1", 1000)),
        ("put_item", _powertools_put("k1", 1001)),  # in progress, not expired: refused
        ("put_item", _powertools_put("k1", 1006)),  # its in-progress expiry passed
        (
            "update_item",
            {
                "TableName": TABLE,
                "Key": {"id": S("k1")},
                "UpdateExpression": (
                    "SET #response_data = :response_data, #expiry = :expiry, #status = :status"
                ),
                "ExpressionAttributeNames": {
                    "#response_data": "data",
                    "#expiry": "expiration",
                    "#status": "status",
                },
                "ExpressionAttributeValues": {
                    ":response_data": S("{}"),
                    ":expiry": N(9999),
                    ":status": S("COMPLETED"),
                },
            },
        ),
        ("put_item", _powertools_put("k1", 1010)),  # completed: refused, old item returned
        ("get_item", {"TableName": TABLE, "Key": {"id": S("k1")}, "ConsistentRead": True}),
        ("delete_item", {"TableName": TABLE, "Key": {"id": S("k1")}}),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("k1")}}),
    ],
    "transactions_all_or_nothing": [
        ("transact_write_items", _take([("a", "ALL_OLD"), ("b", "ALL_OLD")], "one", 10)),
        ("transact_write_items", _take([("b", "ALL_OLD"), ("c", "ALL_OLD")], "two", 11)),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("c")}}),  # nothing was written
        ("transact_write_items", _take([("a", "NONE"), ("b", "ALL_OLD")], "one", 12)),  # own
        ("transact_write_items", _take([("a", "NONE"), ("d", "ALL_OLD")], "two", 13)),
        ("transact_write_items", _take([("b", "ALL_OLD")], "three", 500)),  # expired: taken
        ("get_item", {"TableName": TABLE, "Key": {"id": S("b")}}),
    ],
    "transaction_with_update_and_check": [
        ("put_item", {"TableName": TABLE, "Item": {"id": S("r"), "hold": N(5), "n": N(1)}}),
        (  # "hold" is one of DynamoDB's reserved words: refused unless named with #
            "transact_write_items",
            {
                "TransactItems": [
                    {
                        "ConditionCheck": {
                            "TableName": TABLE,
                            "Key": {"id": S("r")},
                            "ConditionExpression": "hold < :now",
                            "ExpressionAttributeValues": {":now": N(9)},
                        }
                    },
                ]
            },
        ),
        (
            "transact_write_items",
            {
                "TransactItems": [
                    {
                        "ConditionCheck": {
                            "TableName": TABLE,
                            "Key": {"id": S("r")},
                            "ConditionExpression": "#h < :now AND attribute_not_exists(p)",
                            "ExpressionAttributeNames": {"#h": "hold"},
                            "ExpressionAttributeValues": {":now": N(4)},
                        }
                    },
                    {"Put": {"TableName": TABLE, "Item": {"id": S("x"), "v": S("1")}}},
                ]
            },
        ),
        (
            "transact_write_items",
            {
                "TransactItems": [
                    {
                        "Update": {
                            "TableName": TABLE,
                            "Key": {"id": S("r")},
                            "UpdateExpression": "SET #by = :me, n = n + :one REMOVE #h",
                            "ConditionExpression": "#h < :now AND NOT attribute_exists(#by)",
                            "ExpressionAttributeNames": {"#h": "hold", "#by": "by"},
                            "ExpressionAttributeValues": {
                                ":now": N(6),
                                ":me": S("me"),
                                ":one": N(1),
                            },
                        }
                    },
                    {"Delete": {"TableName": TABLE, "Key": {"id": S("x")}}},
                ]
            },
        ),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("r")}}),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("x")}}),
    ],
    "updates_and_conditions": [
        (
            "update_item",
            {
                "TableName": TABLE,
                "Key": {"id": S("j")},
                "UpdateExpression": "ADD job_ids :job SET expiration = :e",
                "ExpressionAttributeValues": {":job": {"SS": ["j1"]}, ":e": N(7)},
            },
        ),
        (
            "update_item",
            {
                "TableName": TABLE,
                "Key": {"id": S("j")},
                "UpdateExpression": "ADD job_ids :job, n :two",
                "ExpressionAttributeValues": {":job": {"SS": ["j2", "j1"]}, ":two": N(2)},
            },
        ),
        (
            "update_item",
            {
                "TableName": TABLE,
                "Key": {"id": S("j")},
                "UpdateExpression": "SET w = if_not_exists(w, :t), v = if_not_exists(n, :t)",
                "ConditionExpression": "(expiration >= :e OR n <> :two) AND NOT n > :big",
                "ExpressionAttributeValues": {":t": N(3), ":e": N(7), ":two": N(2), ":big": N(9)},
            },
        ),
        (
            "update_item",
            {
                "TableName": TABLE,
                "Key": {"id": S("j")},
                "UpdateExpression": "DELETE job_ids :job",
                "ConditionExpression": "#o = :someone",
                "ExpressionAttributeNames": {"#o": "owner"},
                "ExpressionAttributeValues": {":job": {"SS": ["j1"]}, ":someone": S("x")},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            },
        ),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("j")}}),
        (
            "delete_item",
            {
                "TableName": TABLE,
                "Key": {"id": S("j")},
                "ConditionExpression": "attribute_exists(job_ids) AND expiration <= :e",
                "ExpressionAttributeValues": {":e": N(7)},
            },
        ),
        (
            "put_item",
            {
                "TableName": TABLE,
                "Item": {"id": S("s"), "name": S("b")},
                "ConditionExpression": "attribute_not_exists(id) OR #n < :a",
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":a": S("a")},
            },
        ),
        (
            "put_item",
            {
                "TableName": TABLE,
                "Item": {"id": S("s"), "name": S("c")},
                "ConditionExpression": "#n > :a",
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":a": S("a")},
            },
        ),
        (
            "put_item",
            {
                "TableName": TABLE,
                "Item": {"id": S("s"), "name": S("d")},
                "ConditionExpression": "#n < :a",
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":a": S("a")},
            },
        ),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("s")}}),
    ],
    "batch_writes": [
        (
            "batch_write_item",
            {
                "RequestItems": {
                    TABLE: [
                        {"PutRequest": {"Item": {"id": S("m1"), "r": S("x")}}},
                        {"PutRequest": {"Item": {"id": S("m2"), "r": S("y")}}},
                    ]
                }
            },
        ),
        (
            "batch_write_item",
            {"RequestItems": {TABLE: [{"DeleteRequest": {"Key": {"id": S("m1")}}}]}},
        ),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("m1")}}),
        ("get_item", {"TableName": TABLE, "Key": {"id": S("m2")}}),
        (
            "batch_get_item",
            {
                "RequestItems": {
                    TABLE: {"Keys": [{"id": S("m1")}, {"id": S("m2")}], "ConsistentRead": True}
                }
            },
        ),
    ],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_memory_answers_as_moto(scenario: str, moto_dynamodb: Any) -> None:
    table = f"t-{scenario}"
    _fresh_table(moto_dynamodb, table)
    memory = MemoryDynamoDB()
    _fresh_table(memory, table)
    calls = SCENARIOS[scenario]
    expected = _transcript(moto_dynamodb, table, calls)
    assert _transcript(memory, table, calls) == expected
    # Not a trivially equal pair: each scenario has refusals and items to compare.
    assert any(entry[0] == "error" for entry in expected) or scenario == "batch_writes"
    assert any(entry[0] == "ok" and entry[1] for entry in expected)  # items read back


def test_unknown_syntax_is_refused_not_guessed() -> None:
    memory = MemoryDynamoDB()
    memory.ensure_table(TABLE)
    with pytest.raises(NotImplementedError):
        memory.put_item(
            TableName=TABLE,
            Item={"id": S("a")},
            ConditionExpression="begins_with(id, :p)",
            ExpressionAttributeValues={":p": S("a")},
        )


def test_hooks_see_every_call_before_it_runs() -> None:
    memory = MemoryDynamoDB()
    memory.ensure_table(TABLE)
    seen: list[str] = []
    refuse: Callable[[str, dict[str, Any]], None]

    def refuse(operation: str, params: dict[str, Any]) -> None:
        seen.append(operation)
        if operation == "DeleteItem":
            raise memory.exceptions.InternalServerError(
                {"Error": {"Code": "InternalServerError", "Message": "injected"}}, operation
            )

    memory.hooks.append(refuse)
    memory.put_item(TableName=TABLE, Item={"id": S("a")})
    with pytest.raises(ClientError):
        memory.delete_item(TableName=TABLE, Key={"id": S("a")})
    assert memory.get_item(TableName=TABLE, Key={"id": S("a")})["Item"] == {"id": S("a")}
    assert seen == ["PutItem", "DeleteItem", "GetItem"]

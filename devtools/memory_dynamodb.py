"""An in-memory DynamoDB client: the calls the layer and Powertools make, nothing more.

The create ledger, the results store and Powertools' idempotency records all take a boto3
DynamoDB client. Where a test, the bench or the fleet simulation needs thousands of those calls
a second, moto (about 1 ms a call) is too slow, so this answers the same calls in memory with
the same semantics: conditional writes (``ConditionExpression``), update expressions,
``TransactWriteItems`` (all or nothing, with ``CancellationReasons``),
``ReturnValuesOnConditionCheckFailure``, and errors as botocore raises them (``ClientError``
subclasses on ``client.exceptions``). ``tests/unit/test_memory_dynamodb.py`` plays the same
calls against moto and this, and requires the same answers.

Expressions: comparisons (``= <> < <= > >=``), ``AND``/``OR``/``NOT``, parentheses,
``attribute_exists``/``attribute_not_exists`` in conditions; ``SET`` (values, ``+``/``-``,
``if_not_exists``), ``REMOVE``, ``ADD`` (numbers, sets) and ``DELETE`` (sets) in updates; plain
attribute names and ``#names``, no nested paths. Anything else raises ``NotImplementedError``
rather than answering wrongly. Items never expire on their own (neither do DynamoDB's on time:
TTL deletes them up to days late).
"""

from __future__ import annotations

import copy
import functools
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from importlib import resources
from typing import Any

from botocore.exceptions import ClientError

Item = dict[str, dict[str, Any]]


class _Exceptions:
    """``client.exceptions``: the error classes boto3 generates, as ClientError subclasses."""

    def __init__(self) -> None:
        names = (
            "ConditionalCheckFailedException",
            "TransactionCanceledException",
            "ResourceNotFoundException",
            "ResourceInUseException",
            "ValidationException",
            "InternalServerError",
            "ProvisionedThroughputExceededException",
        )
        for name in names:
            setattr(self, name, type(name, (ClientError,), {}))


def _validated(method: Callable[..., dict]) -> Callable[..., dict]:
    """Expressions are checked before anything is evaluated, as DynamoDB does: a reserved
    word or a syntax this does not know is refused for the whole call."""

    @functools.wraps(method)
    def call(self: MemoryDynamoDB, **params: Any) -> dict:
        specs = [params]
        if "TransactItems" in params:
            specs = [next(iter(entry.values())) for entry in params["TransactItems"]]
        try:
            for spec in specs:
                for name in ("ConditionExpression", "UpdateExpression"):
                    if spec.get(name):
                        _Parser(spec[name], spec.get("ExpressionAttributeNames") or {}, {})
        except _Invalid as exc:
            message = f"Invalid expression: {exc}"
            raise self._error("ValidationException", message, method.__name__) from exc
        return method(self, **params)

    return call


class MemoryDynamoDB:
    """One account's tables in memory; thread-safe. ``hooks`` run before every call (the
    fleet simulation makes each call a scheduling point and may inject a failure there)."""

    def __init__(self) -> None:
        self.exceptions = _Exceptions()
        self._tables: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.hooks: list[Callable[[str, dict[str, Any]], None]] = []
        self.meta = _Meta()

    # -- tables ----------------------------------------------------------------------------

    def create_table(self, *, TableName: str, KeySchema: list[dict[str, str]], **_: Any) -> dict:
        with self._lock:
            if TableName in self._tables:
                raise self._error("ResourceInUseException", "Table already exists", "CreateTable")
            keys = [k["AttributeName"] for k in KeySchema]
            self._tables[TableName] = {"keys": keys, "items": {}}
        return {"TableDescription": {"TableName": TableName, "TableStatus": "ACTIVE"}}

    def ensure_table(self, name: str, key: str = "id") -> None:
        """A table with a string hash key, made if it is not there (tests and tools)."""
        with self._lock:
            if name not in self._tables:
                self._tables[name] = {"keys": [key], "items": {}}

    def items(self, table: str) -> list[Item]:
        """Every item of a table (for checks; not a DynamoDB call)."""
        with self._lock:
            return [copy.deepcopy(i) for i in self._table(table, "Scan")["items"].values()]

    # -- single items ----------------------------------------------------------------------

    @_validated
    def get_item(self, *, TableName: str, Key: Item, **_: Any) -> dict:
        self._before("GetItem", locals())
        with self._lock:
            found = self._table(TableName, "GetItem")["items"].get(self._key(TableName, Key))
            return {"Item": copy.deepcopy(found)} if found is not None else {}

    @_validated
    def put_item(self, **params: Any) -> dict:
        with self._lock:
            table, key, _ = self._checked("PutItem", params, params["Item"])
            table["items"][key] = copy.deepcopy(params["Item"])
        return {}

    @_validated
    def update_item(self, **params: Any) -> dict:
        with self._lock:
            table, key, old = self._checked("UpdateItem", params, params["Key"])
            new = copy.deepcopy(old) if old is not None else copy.deepcopy(params["Key"])
            _apply_update(
                new,
                params["UpdateExpression"],
                params.get("ExpressionAttributeNames"),
                params.get("ExpressionAttributeValues"),
            )
            table["items"][key] = new
        if params.get("ReturnValues") == "ALL_NEW":
            return {"Attributes": copy.deepcopy(new)}
        return {}

    @_validated
    def delete_item(self, **params: Any) -> dict:
        with self._lock:
            table, key, _ = self._checked("DeleteItem", params, params["Key"])
            table["items"].pop(key, None)
        return {}

    def _checked(
        self, operation: str, params: dict[str, Any], keyed: Item
    ) -> tuple[dict[str, Any], tuple[Any, ...], Item | None]:
        """The call's table, key and current item, once its condition holds (else raised)."""
        self._before(operation, params)
        table = self._table(params["TableName"], operation)
        key = self._key(params["TableName"], keyed)
        old = table["items"].get(key)
        self._check(
            params.get("ConditionExpression"),
            old,
            params.get("ExpressionAttributeNames"),
            params.get("ExpressionAttributeValues"),
            params.get("ReturnValuesOnConditionCheckFailure"),
            operation,
        )
        return table, key, old

    # -- several items -----------------------------------------------------------------------

    @_validated
    def batch_write_item(self, *, RequestItems: dict[str, list[dict[str, Any]]], **_: Any) -> dict:
        self._before("BatchWriteItem", locals())
        with self._lock:
            for name, requests in RequestItems.items():
                table = self._table(name, "BatchWriteItem")
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        table["items"][self._key(name, item)] = copy.deepcopy(item)
                    else:
                        table["items"].pop(self._key(name, request["DeleteRequest"]["Key"]), None)
        return {"UnprocessedItems": {}}

    @_validated
    def batch_get_item(self, *, RequestItems: dict[str, dict[str, Any]], **_: Any) -> dict:
        self._before("BatchGetItem", locals())
        with self._lock:
            found: dict[str, list[Item]] = {}
            for name, request in RequestItems.items():
                table = self._table(name, "BatchGetItem")
                found[name] = [
                    copy.deepcopy(item)
                    for key in request["Keys"]
                    if (item := table["items"].get(self._key(name, key))) is not None
                ]
        return {"Responses": found, "UnprocessedKeys": {}}

    @_validated
    def transact_write_items(self, *, TransactItems: list[dict[str, Any]], **_: Any) -> dict:
        self._before("TransactWriteItems", locals())
        with self._lock:
            reasons: list[dict[str, Any]] = []
            failed = False
            for entry in TransactItems:
                ((kind, spec),) = entry.items()
                name = spec["TableName"]
                table = self._table(name, "TransactWriteItems")
                key = self._key(name, spec["Item"] if kind == "Put" else spec["Key"])
                old = table["items"].get(key)
                try:
                    self._check(
                        spec.get("ConditionExpression"),
                        old,
                        spec.get("ExpressionAttributeNames"),
                        spec.get("ExpressionAttributeValues"),
                        spec.get("ReturnValuesOnConditionCheckFailure"),
                        "TransactWriteItems",
                    )
                    reasons.append({"Code": "None"})
                except ClientError as refused:
                    failed = True
                    reason: dict[str, Any] = {
                        "Code": "ConditionalCheckFailed",
                        "Message": "The conditional request failed",
                    }
                    if "Item" in refused.response:
                        reason["Item"] = refused.response["Item"]
                    reasons.append(reason)
            if failed:
                codes = ", ".join(r["Code"] for r in reasons)
                error = self.exceptions.TransactionCanceledException(
                    {
                        "Error": {
                            "Code": "TransactionCanceledException",
                            "Message": f"Transaction cancelled, please refer cancellation "
                            f"reasons for specific reasons [{codes}]",
                        },
                        "CancellationReasons": reasons,
                    },
                    "TransactWriteItems",
                )
                raise error
            for entry in TransactItems:
                ((kind, spec),) = entry.items()
                name = spec["TableName"]
                items = self._table(name, "TransactWriteItems")["items"]
                if kind == "Put":
                    items[self._key(name, spec["Item"])] = copy.deepcopy(spec["Item"])
                elif kind == "Delete":
                    items.pop(self._key(name, spec["Key"]), None)
                elif kind == "Update":
                    key = self._key(name, spec["Key"])
                    new = copy.deepcopy(items.get(key) or spec["Key"])
                    _apply_update(
                        new,
                        spec["UpdateExpression"],
                        spec.get("ExpressionAttributeNames"),
                        spec.get("ExpressionAttributeValues"),
                    )
                    items[key] = new
                elif kind != "ConditionCheck":
                    raise NotImplementedError(f"TransactWriteItems {kind}")
        return {}

    # -- helpers -------------------------------------------------------------------------------

    def _before(self, operation: str, params: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook(operation, params)

    def _table(self, name: str, operation: str) -> dict[str, Any]:
        table = self._tables.get(name)
        if table is None:
            raise self._error(
                "ResourceNotFoundException", "Requested resource not found", operation
            )
        return table

    def _key(self, table: str, item: Item) -> tuple[Any, ...]:
        return tuple(_plain(item[name]) for name in self._tables[table]["keys"])

    def _check(
        self,
        condition: str | None,
        old: Item | None,
        names: dict[str, str] | None,
        values: Item | None,
        return_old: str | None,
        operation: str,
    ) -> None:
        if condition is None or _evaluate(condition, old or {}, names or {}, values or {}):
            return
        response: dict[str, Any] = {
            "Error": {
                "Code": "ConditionalCheckFailedException",
                "Message": "The conditional request failed",
            }
        }
        if return_old == "ALL_OLD" and old is not None:
            response["Item"] = copy.deepcopy(old)
        raise self.exceptions.ConditionalCheckFailedException(response, operation)

    def _error(self, code: str, message: str, operation: str) -> ClientError:
        error_class = getattr(self.exceptions, code, ClientError)
        return error_class({"Error": {"Code": code, "Message": message}}, operation)


class _Meta:
    """What code reads from ``client.meta`` (the service's name, for logging and hooks)."""

    class _ServiceModel:
        service_name = "dynamodb"

    service_model = _ServiceModel()
    region_name = "us-east-1"


# -- values ------------------------------------------------------------------------------------


def _plain(value: dict[str, Any]) -> Any:
    ((kind, raw),) = value.items()
    if kind == "N":
        return Decimal(raw)
    if kind in ("SS", "NS"):
        return frozenset(raw)
    return raw


def _compare(left: dict[str, Any] | None, op: str, right: dict[str, Any] | None) -> bool:
    if left is None or right is None:
        return op == "<>" and (left is None) != (right is None)
    ((left_kind, _),) = left.items()
    ((right_kind, _),) = right.items()
    if left_kind != right_kind:
        return op == "<>"
    a, b = _plain(left), _plain(right)
    if op == "=":
        return bool(a == b)
    if op == "<>":
        return bool(a != b)
    if left_kind not in ("N", "S", "B"):
        return False
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


# -- expressions ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<op><>|<=|>=|=|<|>)|(?P<punct>[(),+\-])|(?P<word>[#:]?[A-Za-z_][A-Za-z0-9_]*))"
)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        found = _TOKEN.match(text, position)
        if found is None:
            raise NotImplementedError(f"expression {text!r} at {position}")
        out.append(found.group(found.lastgroup or "word"))
        position = found.end()
    return out


_SYNTAX = {"AND", "OR", "NOT", "SET", "REMOVE", "ADD", "DELETE"}
_FUNCTIONS = {"attribute_exists", "attribute_not_exists", "if_not_exists"}


class _Invalid(Exception):
    """DynamoDB refuses the expression itself (a ValidationException)."""


@functools.cache
def _reserved_words() -> frozenset[str]:
    """DynamoDB's reserved words (moto ships AWS's list): a bare one in an expression is
    refused, as DynamoDB refuses it."""
    listed = resources.files("moto.dynamodb.parsing") / "reserved_keywords.txt"
    return frozenset(word.upper() for word in listed.read_text().split())


class _Parser:
    def __init__(self, text: str, names: dict[str, str], values: Item) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.names = names
        self.values = values
        for token in self.tokens:
            bare = token[0].isalpha() or token[0] == "_"
            if (
                bare
                and token.upper() not in _SYNTAX
                and token.lower() not in _FUNCTIONS
                and token.upper() in _reserved_words()
            ):
                raise _Invalid(f"Attribute name is a reserved keyword; reserved keyword: {token}")

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.upper() != expected):
            raise NotImplementedError(f"expected {expected!r}, found {token!r}")
        self.at += 1
        return token

    def name(self, token: str) -> str:
        return self.names[token] if token.startswith("#") else token


def _evaluate(text: str, item: Item, names: dict[str, str], values: Item) -> bool:
    parser = _Parser(text, names, values)
    result = _or(parser, item)
    if parser.peek() is not None:
        raise NotImplementedError(f"trailing {parser.peek()!r} in {text!r}")
    return result


def _or(p: _Parser, item: Item) -> bool:
    result = _and(p, item)
    while (p.peek() or "").upper() == "OR":
        p.take()
        right = _and(p, item)
        result = result or right
    return result


def _and(p: _Parser, item: Item) -> bool:
    result = _not(p, item)
    while (p.peek() or "").upper() == "AND":
        p.take()
        right = _not(p, item)
        result = result and right
    return result


def _not(p: _Parser, item: Item) -> bool:
    if (p.peek() or "").upper() == "NOT":
        p.take()
        return not _not(p, item)
    return _primary(p, item)


def _primary(p: _Parser, item: Item) -> bool:
    token = p.peek()
    if token == "(":
        p.take()
        result = _or(p, item)
        p.take(")")
        return result
    if token is not None and token.lower() in ("attribute_exists", "attribute_not_exists"):
        p.take()
        p.take("(")
        name = p.name(p.take())
        p.take(")")
        exists = name in item
        return exists if token.lower() == "attribute_exists" else not exists
    left = _operand(p, item)
    op = p.take()
    if op not in ("=", "<>", "<", "<=", ">", ">="):
        raise NotImplementedError(f"comparator {op!r}")
    right = _operand(p, item)
    return _compare(left, op, right)


def _operand(p: _Parser, item: Item) -> dict[str, Any] | None:
    token = p.take()
    if token.startswith(":"):
        return p.values[token]
    return item.get(p.name(token))


def _apply_update(item: Item, text: str, names: dict[str, str] | None, values: Item | None) -> None:
    p = _Parser(text, names or {}, values or {})
    while p.peek() is not None:
        clause = p.take().upper()
        if clause not in ("SET", "REMOVE", "ADD", "DELETE"):
            raise NotImplementedError(f"update clause {clause!r}")
        while True:
            if clause == "SET":
                target = p.name(p.take())
                p.take("=")
                value = _set_value(p, item)
                item[target] = value
            elif clause == "REMOVE":
                item.pop(p.name(p.take()), None)
            else:
                target = p.name(p.take())
                value = p.values[p.take()]
                _add_or_delete(item, target, value, clause)
            if p.peek() == ",":
                p.take()
                continue
            break


def _set_value(p: _Parser, item: Item) -> dict[str, Any]:
    token = p.peek()
    if token is not None and token.lower() == "if_not_exists":
        p.take()
        p.take("(")
        name = p.name(p.take())
        p.take(",")
        fallback = _operand(p, item)
        p.take(")")
        value = item.get(name) or fallback
    else:
        value = _operand(p, item)
    if p.peek() in ("+", "-"):
        sign = p.take()
        other = _operand(p, item)
        if value is None or other is None or "N" not in value or "N" not in other:
            raise NotImplementedError("arithmetic on a missing or non-numeric value")
        total = Decimal(value["N"]) + (Decimal(other["N"]) * (1 if sign == "+" else -1))
        value = {"N": str(total)}
    if value is None:
        raise NotImplementedError("SET of a missing attribute")
    return copy.deepcopy(value)


def _add_or_delete(item: Item, target: str, value: dict[str, Any], clause: str) -> None:
    ((kind, raw),) = value.items()
    current = item.get(target)
    if kind == "N" and clause == "ADD":
        base = Decimal(current["N"]) if current else Decimal(0)
        item[target] = {"N": str(base + Decimal(raw))}
        return
    if kind not in ("SS", "NS"):
        raise NotImplementedError(f"{clause} of {kind}")
    have = set(current[kind]) if current else set()
    have = have | set(raw) if clause == "ADD" else have - set(raw)
    if have:
        item[target] = {kind: sorted(have)}
    else:
        item.pop(target, None)


def memory_ledger(clock: Callable[[], float] | None = None, table: str = "records") -> Any:
    """A create ledger on a fresh in-memory table: the production ledger's code, for tests,
    the bench and the local tools that run without the stack."""
    import time

    from klaviyo_leads.aws.ledger import CreateLedger

    memory = MemoryDynamoDB()
    memory.ensure_table(table)
    return CreateLedger(table, client_factory=lambda: memory, clock=clock or time.time)

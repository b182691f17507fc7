"""The create ledger's records and items: what a request's record says, the DynamoDB items
that hold it (keys, attribute names, conditions' answers), and the errors a ledger raises."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PREFIX = "create#"


REQUEST_PREFIX = "create-request#"


JOB_PREFIX = "create-job#"


TOUCH_PREFIX = "create-touch#"


# As long as a message can be redelivered or a keyed request repeated (the idempotency
# table's horizons), so a late retry still finds its own record.
RECORD_TTL_SECONDS = 24 * 3600


# How far two containers' clocks may be apart (Lambda's are kept by NTP, far closer).
CLOCK_TOLERANCE_SECONDS = 10.0


# Every attribute is named through ExpressionAttributeNames: several are DynamoDB reserved words.
ATTRIBUTE_NAMES = {
    f"#{name}": name
    for name in (
        "id",
        "owner",
        "attempt",
        "identities",
        "started_at",
        "hold_until",
        "written_at",
        "job_ref",
        "profile_id",
        "superseded_by",
        "expiration",
        "job_ids",
    )
}


class LedgerUnavailable(Exception):
    """The table could not be read or written: the create must not go ahead blind."""


class HoldLost(LedgerUnavailable):
    """The record is no longer this attempt's: another attempt adopted it, or another request
    took it over once its hold had run out."""


@dataclass(frozen=True)
class Record:
    """A request's create record, as last read or written."""

    owner: str
    attempt: str
    identities: tuple[str, ...]
    started_at: float
    hold_until: float  # 0: no attempt is running it (the last one ended unsure)
    written_at: float | None = None  # the last write that may have created
    job_ref: str | None = None
    profile_id: str | None = None
    superseded_by: str | None = None

    def running(self, now: float) -> bool:
        """Whether an attempt may still be at work on it (with the clocks' tolerance)."""
        return self.hold_until > 0 and now < self.hold_until + CLOCK_TOLERANCE_SECONDS

    @property
    def wrote(self) -> bool:
        return self.written_at is not None or self.job_ref is not None

    def settle_from(self) -> float:
        """Since when the search may be waited for to show what this request wrote: when its
        attempt ended (``pause``), or, for one still running or gone without a word, the end
        of its hold (a write still on its way arrives before that)."""
        written = self.written_at or self.started_at
        return written if self.hold_until == 0 else max(written, self.hold_until)


@dataclass(frozen=True)
class Holder:
    """Another request met on one of the lead's identifiers."""

    identity: str
    owner: str
    record: Record | None  # None: only the identity's item is left (its request's expired)


@dataclass(frozen=True)
class Taken:
    """What ``take`` found: the request's own record, or the others in its way."""

    mine: Record | None
    others: tuple[Holder, ...] = ()
    busy: bool = False  # another attempt of the same request is running it


def record_of_item(item: dict[str, Any]) -> Record:
    return Record(
        owner=item.get("owner", {}).get("S", ""),
        attempt=item.get("attempt", {}).get("S", ""),
        identities=tuple(sorted(item.get("identities", {}).get("SS", []))),
        started_at=number_of(item, "started_at", 0.0),
        hold_until=number_of(item, "hold_until", 0.0),
        written_at=number_of(item, "written_at", None),
        job_ref=item.get("job_ref", {}).get("S"),
        profile_id=item.get("profile_id", {}).get("S"),
        superseded_by=item.get("superseded_by", {}).get("S"),
    )


def number_of(item: dict[str, Any], name: str, default: Any) -> Any:
    try:
        return float(item[name]["N"])
    except (KeyError, TypeError, ValueError):
        return default


def number(value: float) -> dict[str, str]:
    return {"N": repr(round(value, 6))}


def item_key(key: str) -> dict[str, dict[str, str]]:
    return {"id": {"S": key}}


def attribute_names(*names: str) -> dict[str, str]:
    return {f"#{name}": name for name in names}


def refused(reason: dict[str, Any]) -> bool:
    return reason.get("Code") == "ConditionalCheckFailed"


def owner_in_reason(reason: dict[str, Any]) -> str | None:
    owner = ((reason.get("Item") or {}).get("owner") or {}).get("S")
    return owner if isinstance(owner, str) else None


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


# -- The writes of a transaction --------------------------------------------------------------


def put_request(table_name: str, record: Record, now: float) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": {"S": REQUEST_PREFIX + record.owner},
        "owner": {"S": record.owner},
        "attempt": {"S": record.attempt},
        "identities": {"SS": list(record.identities)},
        "started_at": number(record.started_at),
        "hold_until": number(record.hold_until),
        "expiration": {"N": str(int(now + RECORD_TTL_SECONDS))},
    }
    if record.job_ref:
        item["job_ref"] = {"S": record.job_ref}
    return {
        "Put": {
            "TableName": table_name,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#id) OR #expiration < :now",
            "ExpressionAttributeNames": attribute_names("id", "expiration"),
            "ExpressionAttributeValues": {":now": {"N": str(int(now))}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def put_identity(
    table_name: str, identity: str, owner: str, now: float, replacing: str | None = None
) -> dict[str, Any]:
    values: dict[str, Any] = {":me": {"S": owner}}
    if replacing is None:
        condition = "attribute_not_exists(#id) OR #expiration < :now OR #owner = :me"
        values[":now"] = {"N": str(int(now))}
        names = attribute_names("id", "expiration", "owner")
    else:
        condition = "#owner = :previous"
        values = {":previous": {"S": replacing}}
        names = attribute_names("owner")
    return {
        "Put": {
            "TableName": table_name,
            "Item": {
                "id": {"S": PREFIX + identity},
                "owner": {"S": owner},
                "expiration": {"N": str(int(now + RECORD_TTL_SECONDS))},
            },
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def update(
    table_name: str, key: str, expression: str, condition: str, values: dict[str, Any]
) -> dict[str, Any]:
    used = {n: ATTRIBUTE_NAMES[n] for n in re.findall(r"#\w+", f"{expression} {condition}")}
    return {
        "Update": {
            "TableName": table_name,
            "Key": item_key(key),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": used,
            "ExpressionAttributeValues": values,
        }
    }

"""The record of every create: who is creating a person's profile, what was sent, what it made.

A create's outcome is only true if the bundle knows whether a profile it finds was made by
this lead (an earlier attempt whose answer was lost, a redelivery, a retried event) or by
someone else (a vendor's double send, another lead with the same email). Klaviyo cannot tell:
its search lags a write, and it makes a second profile for a known external id. So every
create path records its facts here, on the idempotency table, before Klaviyo is called:

- the person, by the identifier Klaviyo matches first (email, else phone, else external id);
- the owner: what the lead arrived as, the same on every retry of it (an SQS message id, an
  ``Idempotency-Key``, an EventBridge event id);
- when the owner's first attempt started, and when it last sent a write that may create;
- the import job that carried it (a reference to the job, recorded once the job is taken);
- the profile it made, once known.

A lead finds the record as the owner (this is a retry: a profile it finds is its own) or as
someone else (the profile is a duplicate; a create still running means "in progress", never a
second write). A record whose holder went away without a profile is taken over only once the
search would show what that holder made (``Claim.abandoned``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .results import dynamodb_client

PREFIX = "create#"
JOB_PREFIX = "create-job#"
# How long a record is kept: as long as a message can be redelivered or a keyed request
# repeated (the idempotency table's own horizons), so a late retry still knows its own.
RECORD_TTL_SECONDS = 24 * 3600


class LedgerUnavailable(Exception):
    """The table could not be read or written: the create must not go ahead blind."""


class ClaimLost(LedgerUnavailable):
    """The record is no longer ours (its hold ran out and another lead took it over)."""


@dataclass(frozen=True)
class Claim:
    """A person's create record as this lead found it."""

    identity: str
    owner: str
    mine: bool
    started_at: float  # the owner's first attempt (wall-clock seconds)
    hold_until: float  # others wait until then
    written_at: float | None = None  # the last write that may have created, before this attempt
    profile_id: str | None = None
    job_ref: str | None = None

    def held(self, now: float) -> bool:
        return self.hold_until > now


def identity_of(attributes: dict[str, Any]) -> str | None:
    """The person a new profile is for: the identifier Klaviyo matches first."""
    for name in ("email", "phone_number", "external_id"):
        value = attributes.get(name)
        if isinstance(value, str) and value:
            return f"{name}:{value.lower() if name == 'email' else value}"
    return None


class CreateLedger:
    def __init__(
        self,
        table_name: str,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table_name = table_name
        self._client_factory = client_factory or dynamodb_client
        self._client: Any = None
        self.clock = clock

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # -- taking ------------------------------------------------------------------------------

    def take(
        self, identity: str, owner: str, hold_seconds: float, job_ref: str | None = None
    ) -> Claim:
        """The person's record: a fresh one of ours (about to write), ours from an earlier
        attempt (as it was), or another's. Raises ``LedgerUnavailable``."""
        try:
            return self._take(identity, owner, hold_seconds, job_ref)
        except LedgerUnavailable:
            raise
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc

    def _take(self, identity: str, owner: str, hold_seconds: float, job_ref: str | None) -> Claim:
        now = self.clock()
        item = _fresh_item(identity, owner, now, hold_seconds, job_ref)
        try:
            # Free, or kept past its time (DynamoDB removes expired items late).
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(id) OR expiration < :now",
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
            )
            return Claim(identity, owner, True, now, now + hold_seconds)
        except self.client.exceptions.ConditionalCheckFailedException:
            pass
        stored = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": PREFIX + identity}}, ConsistentRead=True
        ).get("Item")
        if not stored:  # removed in between: try once more
            return self._take(identity, owner, hold_seconds, job_ref)
        found = _claim(identity, stored, owner)
        if found.mine:  # a retry of ours: others keep waiting while it looks
            self.hold(found, hold_seconds)
        return found

    def take_over(
        self, abandoned: Claim, owner: str, hold_seconds: float, job_ref: str | None = None
    ) -> Claim | None:
        """Another's abandoned record, now ours (the search showed it made nothing); None when
        its holder came back first."""
        now = self.clock()
        item = _fresh_item(abandoned.identity, owner, now, hold_seconds, job_ref)
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression=(
                    "#owner = :previous AND attribute_not_exists(profile_id) AND hold_until < :now"
                ),
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={
                    ":previous": {"S": abandoned.owner},
                    ":now": {"N": repr(now)},
                },
            )
        except Exception as exc:
            if type(exc).__name__ == "ConditionalCheckFailedException":
                return None
            raise LedgerUnavailable(type(exc).__name__) from exc
        return Claim(abandoned.identity, owner, True, now, now + hold_seconds)

    # -- what the owner did ------------------------------------------------------------------

    def writing(self, claim: Claim, hold_seconds: float, job_ref: str | None = None) -> None:
        """The owner is about to send a write that may create (again). Raises
        ``LedgerUnavailable``: without this mark a retry could write a second time."""
        now = self.clock()
        names = "SET written_at = :now, hold_until = :hold"
        values: dict[str, Any] = {
            ":now": {"N": repr(now)},
            ":hold": {"N": repr(now + hold_seconds)},
            ":owner": {"S": claim.owner},
        }
        if job_ref:
            names += ", job_ref = :job"
            values[":job"] = {"S": job_ref}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": PREFIX + claim.identity}},
                UpdateExpression=names,
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if type(exc).__name__ == "ConditionalCheckFailedException":
                raise ClaimLost(claim.identity) from exc
            raise LedgerUnavailable(type(exc).__name__) from exc

    def hold(self, claim: Claim, seconds: float) -> None:
        """Keep others waiting longer (a job Klaviyo has not finished). Best effort: without
        it, others search first once the hold it had is over."""
        with contextlib.suppress(Exception):
            self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": PREFIX + claim.identity}},
                UpdateExpression="SET hold_until = :hold",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={
                    ":hold": {"N": repr(self.clock() + seconds)},
                    ":owner": {"S": claim.owner},
                },
            )

    def created(self, claim: Claim, profile_id: str) -> bool:
        """The owner's create made (or, as its retry found, had made) this profile."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": PREFIX + claim.identity}},
                UpdateExpression="SET profile_id = :profile",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={
                    ":profile": {"S": profile_id},
                    ":owner": {"S": claim.owner},
                },
            )
            return True
        except Exception:  # the record still says a write was sent: a retry searches
            return False

    def release(self, claim: Claim) -> None:
        """Nothing was created (Klaviyo refused the write, or it was never sent). Best effort:
        a record left behind makes others wait out its hold, then search."""
        with contextlib.suppress(Exception):
            self.client.delete_item(
                TableName=self.table_name,
                Key={"id": {"S": PREFIX + claim.identity}},
                ConditionExpression="#owner = :owner AND attribute_not_exists(profile_id)",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": claim.owner}},
            )

    # -- import jobs -------------------------------------------------------------------------

    def job_taken(self, job_ref: str, job_id: str) -> bool:
        """Klaviyo took a job that ``job_ref`` names: a redelivery reads it, not sends again."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"id": {"S": JOB_PREFIX + job_ref}},
                UpdateExpression="ADD job_ids :job SET expiration = :expires",
                ExpressionAttributeValues={
                    ":job": {"SS": [job_id]},
                    ":expires": {"N": str(int(self.clock() + RECORD_TTL_SECONDS))},
                },
            )
            return True
        except Exception:
            return False

    def jobs_of(self, job_ref: str) -> list[str]:
        """The import jobs a reference names, as recorded. Raises ``LedgerUnavailable``."""
        try:
            item = self.client.get_item(
                TableName=self.table_name,
                Key={"id": {"S": JOB_PREFIX + job_ref}},
                ConsistentRead=True,
            ).get("Item")
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc
        return sorted((item or {}).get("job_ids", {}).get("SS", []))


def _fresh_item(
    identity: str, owner: str, now: float, hold_seconds: float, job_ref: str | None
) -> dict[str, Any]:
    """A record its owner takes now, about to write (under ``job_ref``'s job, if any)."""
    item = {
        "id": {"S": PREFIX + identity},
        "owner": {"S": owner},
        "started_at": {"N": repr(now)},
        "written_at": {"N": repr(now)},
        "hold_until": {"N": repr(now + hold_seconds)},
        "expiration": {"N": str(int(now + RECORD_TTL_SECONDS))},
    }
    if job_ref:
        item["job_ref"] = {"S": job_ref}
    return item


def _claim(identity: str, item: dict[str, Any], owner: str) -> Claim:
    def number(name: str) -> float | None:
        try:
            return float(item[name]["N"])
        except (KeyError, TypeError, ValueError):
            return None

    stored_owner = item.get("owner", {}).get("S", "")
    return Claim(
        identity=identity,
        owner=stored_owner,
        mine=stored_owner == owner,
        started_at=number("started_at") or 0.0,
        hold_until=number("hold_until") or 0.0,
        written_at=number("written_at"),
        profile_id=item.get("profile_id", {}).get("S"),
        job_ref=item.get("job_ref", {}).get("S"),
    )

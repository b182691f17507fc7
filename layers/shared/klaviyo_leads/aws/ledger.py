"""The create ledger: which request is making, or made, the profile of each identifier.

A person is every identifier a lead carries (email, phone number, external id). Before a
create path writes to Klaviyo it takes, in one DynamoDB transaction, an item per identifier
(``create#<identifier>:<hash>``) and its request's record (``create-request#<owner>``), so two
requests that share any identifier meet on it, whichever they carry first. The record says:

- the owner: what the lead arrived as, the same on every retry of it (an SQS message id, an
  ``Idempotency-Key``, an EventBridge event id); and the attempt now running it;
- a hold: until when the running attempt may still write (renewed right before each write,
  so a request that waited on 429s or a slow job never writes on a hold that ran out);
- whether it wrote (``written_at``), under which import job reference (``job_ref``);
- the profile it made, once known; or who took it over (``superseded_by``) after it went away
  without one.

Times are each container's own clock. They are compared across containers only with
``CLOCK_TOLERANCE_SECONDS`` to spare: a hold counts as running until that long after it ends.

The rules for what a record means to a lead are in ``actions.create.identity`` (and, for
writes other than a create, ``actions.create.adding``); this module
only keeps records, atomically. Every failure to reach the table raises ``LedgerUnavailable``:
a create must not go ahead without its record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from klaviyo_leads.aws.ledger_marks import MarkedTable
from klaviyo_leads.aws.ledger_records import (
    CLOCK_TOLERANCE_SECONDS,
    JOB_PREFIX,
    PREFIX,
    RECORD_TTL_SECONDS,
    REQUEST_PREFIX,
    Holder,
    HoldLost,
    LedgerUnavailable,
    Record,
    Taken,
    attribute_names,
    error_code,
    item_key,
    number,
    number_of,
    owner_in_reason,
    put_identity,
    put_request,
    record_of_item,
    refused,
    update,
)


class CreateLedger(MarkedTable):
    # -- taking ------------------------------------------------------------------------------

    def take(
        self,
        identities: Iterable[str],
        owner: str,
        attempt: str,
        hold_seconds: float,
        job_ref: str | None = None,
    ) -> Taken:
        """Every identity for this request, at once, or nothing: a fresh record, this
        request's own from an earlier attempt (now this attempt's), or the others holding
        some of the identities. Raises ``LedgerUnavailable``."""
        wanted = tuple(dict.fromkeys(identities))
        try:
            return self._take(wanted, owner, attempt, hold_seconds, job_ref, again=True)
        except LedgerUnavailable:
            raise
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc

    def _take(
        self,
        identities: tuple[str, ...],
        owner: str,
        attempt: str,
        hold_seconds: float,
        job_ref: str | None,
        *,
        again: bool,
    ) -> Taken:
        now = self.clock()
        fresh = Record(owner, attempt, identities, now, now + hold_seconds, job_ref=job_ref)
        writes = [put_request(self.table_name, fresh, now)]
        writes += [put_identity(self.table_name, i, owner, now) for i in identities]
        reasons = self._transact(writes)
        if reasons is None:
            return Taken(fresh)
        if refused(reasons[0]):  # the request's record exists: a retry of it
            return self._resume(identities, owner, attempt, hold_seconds, again=again)
        others = [
            Holder(identity, owner_of, self.record_of(owner_of))
            for identity, reason in zip(identities, reasons[1:], strict=True)
            if refused(reason) and (owner_of := owner_in_reason(reason)) is not None
        ]
        if not others:
            if again:  # refused by a record that is gone now (released meanwhile)
                return self._take(identities, owner, attempt, hold_seconds, job_ref, again=False)
            raise LedgerUnavailable("contended")
        return Taken(None, tuple(others))

    def _resume(
        self,
        identities: tuple[str, ...],
        owner: str,
        attempt: str,
        hold_seconds: float,
        *,
        again: bool,
    ) -> Taken:
        record = self.record_of(owner)
        if record is None:
            if not again:
                raise LedgerUnavailable("contended")
            return self._take(identities, owner, attempt, hold_seconds, None, again=False)
        if record.superseded_by is not None:
            holders = self._holders(identities, owner)
            if holders:
                return Taken(None, tuple(holders))
            # Whoever took it over is done with the identities (it released them): this
            # request starts again, its old record replaced.
            return self._restart(identities, owner, attempt, hold_seconds, record)
        if record.attempt == attempt:
            return Taken(record)
        now = self.clock()
        if record.running(now):
            return Taken(None, busy=True)
        # What the attempt before wrote reached Klaviyo when it ended (a pause), or, gone
        # without a word, before its hold ran out: that is when the search is waited from.
        written = record.settle_from() if record.wrote else None
        expression = "SET #attempt = :attempt, #hold_until = :hold"
        values: dict[str, Any] = {
            ":attempt": {"S": attempt},
            ":previous": {"S": record.attempt},
            ":hold": number(now + hold_seconds),
        }
        if written is not None:
            expression += ", #written_at = :written"
            values[":written"] = number(written)
        try:
            self.client.update_item(
                **update(
                    self.table_name,
                    REQUEST_PREFIX + owner,
                    expression,
                    "#attempt = :previous AND attribute_not_exists(#superseded_by)",
                    values,
                )["Update"]
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return Taken(None, busy=True)  # another attempt adopted it first
        adopted = replace(record, attempt=attempt, hold_until=now + hold_seconds)
        return Taken(replace(adopted, written_at=written) if written is not None else adopted)

    def _restart(
        self,
        identities: tuple[str, ...],
        owner: str,
        attempt: str,
        hold_seconds: float,
        superseded: Record,
    ) -> Taken:
        now = self.clock()
        fresh = Record(owner, attempt, identities, now, now + hold_seconds)
        writes = [self._replacing(fresh, now, superseded)]
        writes += [put_identity(self.table_name, i, owner, now) for i in identities]
        if self._transact(writes) is not None:
            raise LedgerUnavailable("contended")
        return Taken(fresh)

    def _replacing(self, fresh: Record, now: float, superseded: Record) -> dict[str, Any]:
        """The write that puts a fresh record in place of the request's superseded one (the
        request that took it over searched and found nothing the old attempts made), only
        while it is still superseded by the same request."""
        replacing = put_request(self.table_name, fresh, now)
        replacing["Put"].update(
            ConditionExpression="#superseded_by = :by",
            ExpressionAttributeNames=attribute_names("superseded_by"),
            ExpressionAttributeValues={":by": {"S": superseded.superseded_by or ""}},
        )
        return replacing

    def take_over(
        self,
        identities: Iterable[str],
        owner: str,
        attempt: str,
        hold_seconds: float,
        abandoned: Iterable[Holder],
        job_ref: str | None = None,
    ) -> Record | None:
        """The identities, with those of requests that went away without a profile (the
        search showed they made nothing) now this request's; None when any of them came
        back, made something, or was taken by someone else first."""
        wanted = tuple(dict.fromkeys(identities))
        now = self.clock()
        by_identity = {h.identity: h for h in abandoned}
        mine = self.record_of(owner)
        fresh = Record(owner, attempt, wanted, now, now + hold_seconds, job_ref=job_ref)
        writes: list[dict[str, Any]] = []
        if mine is None:
            writes.append(put_request(self.table_name, fresh, now))
        elif mine.superseded_by is not None:
            # Taken over once, by a request now gone too (or done with the identities): this
            # request starts again, as ``_restart`` does. A superseded record is never updated
            # as its owner's again: kept, every retry would wait as long as the record lives.
            writes.append(self._replacing(fresh, now, mine))
        else:
            fresh = replace(mine, attempt=attempt, hold_until=now + hold_seconds)
            writes.append(
                update(
                    self.table_name,
                    REQUEST_PREFIX + owner,
                    "SET #attempt = :attempt, #hold_until = :hold",
                    "#attempt = :previous AND attribute_not_exists(#superseded_by)",
                    {
                        ":attempt": {"S": attempt},
                        ":previous": {"S": mine.attempt},
                        ":hold": number(now + hold_seconds),
                    },
                )
            )
        for identity in wanted:
            holder = by_identity.get(identity)
            if holder is None:
                writes.append(put_identity(self.table_name, identity, owner, now))
            else:
                writes.append(
                    put_identity(self.table_name, identity, owner, now, replacing=holder.owner)
                )
        cutoff = now - CLOCK_TOLERANCE_SECONDS
        # A holder already taken over (on some of its identities, by someone else) is done:
        # its remaining identities are free for the asking, without superseding it again.
        live = [h for h in by_identity.values() if h.record and not h.record.superseded_by]
        for holder in {h.owner: h for h in live}.values():
            assert holder.record is not None
            writes.append(
                update(
                    self.table_name,
                    REQUEST_PREFIX + holder.owner,
                    "SET #superseded_by = :me",
                    "#attempt = :their_attempt AND #hold_until < :cutoff AND "
                    "attribute_not_exists(#profile_id) AND attribute_not_exists(#superseded_by)",
                    {
                        ":me": {"S": owner},
                        ":their_attempt": {"S": holder.record.attempt},
                        ":cutoff": number(cutoff),
                    },
                )
            )
        try:
            reasons = self._transact(writes)
        except LedgerUnavailable:
            raise
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc
        return fresh if reasons is None else None

    # -- what the running attempt does ------------------------------------------------------

    def renew(
        self,
        record: Record,
        hold_seconds: float,
        *,
        writing: bool = False,
        job_ref: str | None = None,
    ) -> Record:
        """Hold the identities longer; ``writing``: a write that may create goes out now.
        Raises ``HoldLost`` when the record is no longer this attempt's (nothing may be
        written then), ``LedgerUnavailable`` when the table cannot be reached."""
        now = self.clock()
        expression = "SET #hold_until = :hold"
        values: dict[str, Any] = {
            ":hold": number(now + hold_seconds),
            ":attempt": {"S": record.attempt},
        }
        if writing:
            expression += ", #written_at = :now"
            values[":now"] = number(now)
        if job_ref is not None:
            expression += ", #job_ref = :job"
            values[":job"] = {"S": job_ref}
        try:
            self.client.update_item(
                **update(
                    self.table_name,
                    REQUEST_PREFIX + record.owner,
                    expression,
                    "#attempt = :attempt AND attribute_not_exists(#superseded_by)",
                    values,
                )["Update"]
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise HoldLost(record.owner) from exc
            raise LedgerUnavailable(type(exc).__name__) from exc
        return replace(
            record,
            hold_until=now + hold_seconds,
            written_at=now if writing else record.written_at,
            job_ref=job_ref or record.job_ref,
        )

    def created(self, record: Record, profile_id: str) -> bool:
        """The request made this profile (a fact: Klaviyo's 201, its mark on the profile, or
        its import job): everyone after is told so. False when it could not be recorded."""
        try:
            self.client.update_item(
                **update(
                    self.table_name,
                    REQUEST_PREFIX + record.owner,
                    "SET #profile_id = :profile, #hold_until = :zero",
                    "attribute_not_exists(#superseded_by)",
                    {":profile": {"S": profile_id}, ":zero": number(0)},
                )["Update"]
            )
            return True
        except Exception:  # the record still says a write went out: a retry finds it again
            return False

    def pause(self, record: Record) -> None:
        """The attempt ends without knowing what its write did: nobody need wait for it any
        more, and what it wrote reached Klaviyo by now (``written_at``). Best effort: without
        it, others wait out its hold."""
        expression = "SET #hold_until = :zero"
        values: dict[str, Any] = {":zero": number(0), ":attempt": {"S": record.attempt}}
        if record.written_at is not None:
            expression += ", #written_at = :now"
            values[":now"] = number(self.clock())
        with contextlib.suppress(Exception):
            self.client.update_item(
                **update(
                    self.table_name,
                    REQUEST_PREFIX + record.owner,
                    expression,
                    "#attempt = :attempt",
                    values,
                )["Update"]
            )

    def release(self, record: Record) -> None:
        """Nothing was made (Klaviyo refused the write, or it was never sent): the identities
        are free again. Best effort: a record left behind makes others wait out its hold."""
        writes = [
            {
                "Delete": {
                    "TableName": self.table_name,
                    "Key": item_key(REQUEST_PREFIX + record.owner),
                    "ConditionExpression": "#attempt = :attempt AND "
                    "attribute_not_exists(#profile_id) AND attribute_not_exists(#superseded_by)",
                    "ExpressionAttributeNames": attribute_names(
                        "attempt", "profile_id", "superseded_by"
                    ),
                    "ExpressionAttributeValues": {":attempt": {"S": record.attempt}},
                }
            }
        ]
        writes += [
            {
                "Delete": {
                    "TableName": self.table_name,
                    "Key": item_key(PREFIX + identity),
                    "ConditionExpression": "#owner = :owner",
                    "ExpressionAttributeNames": attribute_names("owner"),
                    "ExpressionAttributeValues": {":owner": {"S": record.owner}},
                }
            }
            for identity in record.identities
        ]
        with contextlib.suppress(Exception):
            self._transact(writes)

    # -- reading -----------------------------------------------------------------------------

    def record_of(self, owner: str) -> Record | None:
        """A request's record (consistent read), or None when there is none."""
        item = self._get(REQUEST_PREFIX + owner)
        if not item or number_of(item, "expiration", 0.0) < self.clock():
            return None
        return record_of_item(item)

    def _holders(self, identities: tuple[str, ...], owner: str) -> list[Holder]:
        holders = []
        for identity in identities:
            item = self._get(PREFIX + identity)
            other = (item or {}).get("owner", {}).get("S")
            if other and other != owner:
                holders.append(Holder(identity, other, self.record_of(other)))
        return holders

    # -- import jobs -------------------------------------------------------------------------

    def job_taken(self, job_ref: str, job_id: str) -> bool:
        """Klaviyo took a job that ``job_ref`` names: a redelivery reads it, not sends again."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=item_key(JOB_PREFIX + job_ref),
                UpdateExpression="ADD #job_ids :job SET #expiration = :expires",
                ExpressionAttributeNames=attribute_names("job_ids", "expiration"),
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
        item = self._get(JOB_PREFIX + job_ref)
        return sorted((item or {}).get("job_ids", {}).get("SS", []))

    # -- DynamoDB ------------------------------------------------------------------------------

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] | None = self.client.get_item(
                TableName=self.table_name, Key=item_key(key), ConsistentRead=True
            ).get("Item")
        except Exception as exc:
            raise LedgerUnavailable(type(exc).__name__) from exc
        return found

    def _transact(self, writes: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """None when every write took; else the cancellation reasons, one per write."""
        try:
            self.client.transact_write_items(TransactItems=writes)
            return None
        except Exception as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if len(reasons) != len(writes) or any(
                r.get("Code") not in ("None", "ConditionalCheckFailed") for r in reasons
            ):
                # Another transaction on the same items at the same moment: nothing written,
                # and nothing known about the others yet.
                raise LedgerUnavailable("contended") from exc
            return list(reasons)

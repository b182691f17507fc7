"""Creates of a profile known only by its external id, claimed across the fleet.

Klaviyo answers 409 to a second profile with a known email or phone, but makes a second
profile for a known external id, and its search lags a create by a moment. Two requests for
one lead known only by its external id (a webhook retry without an ``Idempotency-Key``, a
vendor sending a lead twice) could both search, find nothing and create. So before such a
create the function claims the external id in the idempotency table (one conditional write),
and after it the claim holds the new profile's id for as long as the search may lag. Another
create of that external id meanwhile finds the claim: the profile's id (a duplicate, as a
search would have said), or, while the first is still creating, a short wait. The same
request again (a redelivered message, a repeat with the same key) owns the claim already.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .results import dynamodb_client

PREFIX = "create-external-id#"


@dataclass(frozen=True)
class Standing:
    """Someone else's claim: the profile it created, when it has."""

    profile_id: str | None
    expires_at: float


class ExternalIdClaims:
    def __init__(
        self,
        table_name: str,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table_name = table_name
        self._client_factory = client_factory or dynamodb_client
        self._client: Any = None
        self._clock = clock

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def claim(self, external_id: str, owner: str, hold_seconds: float) -> Standing | None:
        """None when the create is ours to make; else the claim that stands in its way."""
        now = self._clock()
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    "id": {"S": PREFIX + external_id},
                    "owner": {"S": owner},
                    "expiration": {"N": str(int(now + hold_seconds) + 1)},
                },
                ConditionExpression=(
                    "attribute_not_exists(id) OR expiration < :now OR #owner = :owner"
                ),
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":now": {"N": str(int(now))}, ":owner": {"S": owner}},
            )
            return None
        except self.client.exceptions.ConditionalCheckFailedException:
            pass
        item = self.client.get_item(
            TableName=self.table_name, Key={"id": {"S": PREFIX + external_id}}, ConsistentRead=True
        ).get("Item")
        if not item:  # released in between: try once more
            return self.claim(external_id, owner, hold_seconds)
        return Standing(
            profile_id=item.get("profile_id", {}).get("S"),
            expires_at=float(item["expiration"]["N"]),
        )

    def created(self, external_id: str, owner: str, profile_id: str, hold_seconds: float) -> None:
        """The profile exists: others are told its id until the search has caught up."""
        self.client.update_item(
            TableName=self.table_name,
            Key={"id": {"S": PREFIX + external_id}},
            UpdateExpression="SET profile_id = :profile, expiration = :expires",
            ConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={
                ":profile": {"S": profile_id},
                ":expires": {"N": str(int(self._clock() + hold_seconds) + 1)},
                ":owner": {"S": owner},
            },
        )

    def release(self, external_id: str, owner: str) -> None:
        """Nothing was created: the next create of this external id may go ahead."""
        self.client.delete_item(
            TableName=self.table_name,
            Key={"id": {"S": PREFIX + external_id}},
            ConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":owner": {"S": owner}},
        )

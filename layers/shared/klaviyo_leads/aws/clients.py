"""AWS clients, made on first use: boto3 costs a cold start only the paths that call AWS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def dynamodb_client() -> Any:
    import boto3

    return boto3.client("dynamodb")


class DynamoDBTable:
    """A table the functions read and write (the create ledger, the results): its name and a
    client made on first use, or by ``client_factory`` (tests, the local runner)."""

    def __init__(self, table_name: str, client_factory: Callable[[], Any] | None = None) -> None:
        self.table_name = table_name
        self._client_factory = client_factory or dynamodb_client
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

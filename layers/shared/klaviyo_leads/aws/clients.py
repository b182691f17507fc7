"""AWS clients, made on first use: boto3 costs a cold start only the paths that call AWS."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def boto3_client(service: str) -> Callable[[], Any]:
    """A factory of ``service``'s client; boto3 is imported when the first one is made."""

    def make() -> Any:
        import boto3

        return boto3.client(service)

    return make


class OnFirstUse:
    """A service the functions call through a client made on first use, or by
    ``client_factory`` (tests, the local runner)."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client


class DynamoDBTable(OnFirstUse):
    """A table the functions read and write (the create ledger, the results), on the
    container's ``clock``."""

    def __init__(
        self,
        table_name: str,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client_factory or boto3_client("dynamodb"))
        self.table_name = table_name
        self.clock = clock

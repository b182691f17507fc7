"""Local stand-ins for what the functions read their secret from in AWS.

- ``SecretsExtension``: the AWS Parameters and Secrets Lambda Extension's HTTP interface on
  127.0.0.1 (``GET /secretsmanager/get?secretId=...`` with the
  ``X-Aws-Parameters-Secrets-Token`` header set to the session token, answering Secrets
  Manager's ``GetSecretValue`` JSON), as the extension layer serves it inside Lambda.
- ``deployed_stack``: moto's server with template.yaml deployed in it, the key in the stack's
  Secrets Manager secret, for boto3 (Powertools Parameters and the baseline's own client).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from devtools.aws import LocalStack, MotoServer, deploy_local_stack
from devtools.lambda_events import ACCOUNT_ID, REGION

SECRET_NAME = "klaviyo/api-key"
SESSION_TOKEN = "bench-session-token"


class SecretsExtension:
    """The extension's local HTTP endpoint, serving one secret."""

    def __init__(self, secrets: dict[str, str], token: str = SESSION_TOKEN) -> None:
        self.secrets = secrets
        self.token = token
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                url = urlsplit(self.path)
                secret_id = (parse_qs(url.query).get("secretId") or [""])[0]
                if self.headers.get("X-Aws-Parameters-Secrets-Token") != owner.token:
                    self._answer(401, {"message": "missing or wrong token"})
                elif url.path != "/secretsmanager/get" or secret_id not in owner.secrets:
                    self._answer(400, {"message": "ResourceNotFoundException"})
                else:
                    prefix = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:"
                    arn = (
                        secret_id if secret_id.startswith("arn:") else f"{prefix}{secret_id}-AbCdEf"
                    )
                    self._answer(
                        200,
                        {
                            "ARN": arn,
                            "Name": secret_id,
                            "SecretString": owner.secrets[secret_id],
                            "VersionId": "00000000-0000-0000-0000-000000000001",
                            "VersionStages": ["AWSCURRENT"],
                            "CreatedDate": "2026-01-01T00:00:00Z",
                        },
                    )

            def _answer(self, status: int, body: dict[str, object]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SecretsExtension:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def secrets_extension(api_key: str, secret_id: str = SECRET_NAME) -> Iterator[SecretsExtension]:
    extension = SecretsExtension({secret_id: api_key}).start()
    try:
        yield extension
    finally:
        extension.stop()


@contextlib.contextmanager
def deployed_stack(api_key: str) -> Iterator[LocalStack]:
    """moto on 127.0.0.1 with the stack deployed in it, its secret holding the key."""
    access_log = logging.getLogger("werkzeug")  # moto's server logs every request
    level = access_log.level
    access_log.setLevel(logging.ERROR)
    try:
        with MotoServer() as moto:
            yield deploy_local_stack(
                api_key, endpoint_url=moto.endpoint_url, name="klaviyo-lead-actions-bench"
            )
    finally:
        access_log.setLevel(level)

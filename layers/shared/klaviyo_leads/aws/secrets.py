"""The Klaviyo API key, read from AWS Secrets Manager and kept for the container's life.

Where the AWS Parameters and Secrets Lambda Extension runs, the key comes from it over
localhost (no boto3 import on the cold path); elsewhere from Powertools Parameters. A 401
from Klaviyo makes the client ask again with ``force=True`` (key rotation).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping

import urllib3

from klaviyo_leads import outcomes

SecretFetcher = Callable[[str, bool], str]


def api_key_from_secret(value: str) -> str:
    """The secret holds the private key itself or JSON ``{"api_key": "pk_..."}``."""
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        key = parsed.get("api_key") if isinstance(parsed, dict) else None
        if not isinstance(key, str) or not key.strip():
            raise outcomes.SECRET_WITHOUT_KEY()
        return key.strip()
    if not text:
        raise outcomes.SECRET_EMPTY()
    return text


class ApiKeyProvider:
    """Reads the key once, re-reads it on demand; safe to share between threads."""

    def __init__(self, secret_id: str | None, fetch: SecretFetcher | None = None) -> None:
        self._secret_id = secret_id
        self._fetch = fetch or default_fetcher()
        self._lock = threading.Lock()
        self._key: str | None = None

    def __call__(self, force: bool = False) -> str:
        with self._lock:
            if self._key is None or force:
                if not self._secret_id:
                    raise outcomes.SECRET_NOT_CONFIGURED()
                self._key = api_key_from_secret(self._fetch(self._secret_id, force))
            return self._key


def default_fetcher(env: Mapping[str, str] | None = None) -> SecretFetcher:
    env = os.environ if env is None else env
    port = env.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
    token = env.get("AWS_SESSION_TOKEN")
    if port and token:
        return ExtensionFetcher(port, token, fallback=fetch_with_powertools)
    return fetch_with_powertools


class ExtensionFetcher:
    """GET the secret from the Lambda extension on localhost; fall back to the SDK."""

    def __init__(self, port: str, token: str, fallback: SecretFetcher) -> None:
        self._url = f"http://localhost:{port}/secretsmanager/get"
        self._token = token
        self._fallback = fallback
        self._pool = urllib3.PoolManager(num_pools=1)

    def __call__(self, secret_id: str, force: bool) -> str:
        if not force:  # the extension caches too; after a 401 go to the source
            try:
                response = self._pool.request(
                    "GET",
                    self._url,
                    fields={"secretId": secret_id},
                    headers={"X-Aws-Parameters-Secrets-Token": self._token},
                    timeout=urllib3.Timeout(connect=1.0, read=3.0),
                    retries=False,
                )
                if response.status == 200:
                    value = json.loads(response.data).get("SecretString")
                    if isinstance(value, str):
                        return value
            except (urllib3.exceptions.HTTPError, ValueError, AttributeError):
                pass
        return self._fallback(secret_id, force)


def fetch_with_powertools(secret_id: str, force: bool) -> str:
    # Imported on first use: boto3 costs ~150 ms of cold start that most paths never need.
    from aws_lambda_powertools.utilities import parameters
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = parameters.get_secret(secret_id, force_fetch=force)
    except parameters.exceptions.GetParameterError as exc:
        cause = exc.__cause__ or exc.__context__
        code = ""
        if isinstance(cause, ClientError):
            code = cause.response.get("Error", {}).get("Code", "")
        permanent = code in {
            "ResourceNotFoundException",
            "AccessDeniedException",
            "DecryptionFailure",
            "InvalidRequestException",
            "InvalidParameterException",
        }
        if permanent:
            raise outcomes.SECRET_DENIED(code=code) from exc
        raise outcomes.SECRET_UNAVAILABLE() from exc
    except BotoCoreError as exc:
        raise outcomes.SECRET_UNAVAILABLE() from exc
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)

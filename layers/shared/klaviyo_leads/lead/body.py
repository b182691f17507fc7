"""A lead as it arrives: request bodies (JSON or a form) parsed, nested objects flattened to
the flat record the field mapping reads, its keys spelt the canonical way."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from klaviyo_leads import outcomes
from klaviyo_leads.lead import fields as fieldmap

# Keys a lead may carry that are read although they are no profile field or variable.
READ_KEYS = frozenset({"id"})


# "Klaviyo Custom Favorite Color": the lead platform's display name of a custom property. Read
# only when the name is plain words (letters, digits, single spaces), so one spelling cannot
# stand for two properties; it becomes ``klaviyo.custom.favorite_color`` (lower case, spaces as
# underscores), the form the platform's own keys have.
CUSTOM_DISPLAY = re.compile(r"klaviyo custom ([A-Za-z0-9]+(?: [A-Za-z0-9]+)*)", re.IGNORECASE)


SCALAR_KEYS = frozenset(
    [f.key for f in fieldmap.LEAD_FIELDS]
    + [v.key for v in fieldmap.VARIABLES if "<" not in v.key]
    + [e.key for e in fieldmap.EVIDENCE_FIELDS]
)


CUSTOM_OBJECT_KEY = fieldmap.CUSTOM_PREFIX.rstrip(".")

MAX_BODY_BYTES = 256 * 1024


# Levels of nested objects and lists a lead may have: custom properties and event properties
# take 10 below their own keys; a deeper lead is no lead (and would exhaust the stack).
MAX_LEAD_NESTING = 32


ACCEPTED_MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded")


_UNREAD_MEDIA = re.compile(r"^(multipart/|.*[/+]xml$)")


def parse_body(body: str | bytes | None, content_type: str | None, is_base64: bool) -> dict:
    """An API Gateway body (JSON or form) as a lead object, or a ``bad_request`` problem.

    What callers send by habit is read as they meant it: JSON under a form content type
    (``curl -d '{...}'``), a byte-order mark before JSON, repeated form keys (a list).
    """
    if body is None or body == "" or body == b"":
        raise outcomes.BODY_EMPTY()
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if is_base64:
        try:
            raw = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise outcomes.BODY_NOT_BASE64() from exc
    if len(raw) > MAX_BODY_BYTES:
        raise outcomes.BODY_TOO_LARGE(limit=MAX_BODY_BYTES // 1024)
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise outcomes.BODY_NOT_UTF8() from exc

    media_type = (content_type or "").split(";")[0].strip().lower()
    if _UNREAD_MEDIA.match(media_type):
        raise outcomes.UNSUPPORTED_MEDIA(
            media_type=media_type, accepted=" or ".join(ACCEPTED_MEDIA_TYPES)
        )
    if media_type == "application/x-www-form-urlencoded" and not text.lstrip().startswith("{"):
        return _form(text)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise outcomes.BODY_NOT_JSON() from exc
    if not isinstance(value, dict):
        raise outcomes.BODY_NOT_OBJECT()
    return value


def _form(text: str) -> dict[str, Any]:
    """A form body; a key given more than once becomes a list of its values."""
    fields: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key not in fields:
            fields[key] = value
        elif isinstance(fields[key], list):
            fields[key].append(value)
        else:
            fields[key] = [fields[key], value]
    return fields


def _squash(name: str) -> str:
    """A key as spelling-insensitive text: "First Name", "first_name", "FIRST-NAME" alike."""
    return re.sub(r"[\s._-]+", "", name).lower()


# The lead's keys and the lead platform's display names ("Phone 1", "Company Name"), squashed.
_KEYS_BY_SPELLING = {
    _squash(name): key
    for key, names in [(f.key, (f.seed_name,)) for f in fieldmap.LEAD_FIELDS]
    + [(v.key, (v.seed_name,)) for v in fieldmap.VARIABLES if "<" not in v.key]
    + [(e.key, (e.seed_name, *e.aliases)) for e in fieldmap.EVIDENCE_FIELDS]
    for name in (key, *names)
}


# Spellings come again and again (a file's columns on every row, a form's fields on every
# lead): the short ones are remembered, so a long or ever-new key costs no memory.
_CACHED_KEY_LENGTH = 64


def canonical_key(name: str) -> str:
    """The lead key a spelling stands for; custom property names are kept as written."""
    if len(name) <= _CACHED_KEY_LENGTH:
        return _canonical_key_cached(name)
    return _canonical_key(name)


@functools.lru_cache(maxsize=2048)
def _canonical_key_cached(name: str) -> str:
    return _canonical_key(name)


def _canonical_key(name: str) -> str:
    if name.lower().startswith(fieldmap.CUSTOM_PREFIX):
        return fieldmap.CUSTOM_PREFIX + name[len(fieldmap.CUSTOM_PREFIX) :]
    display = CUSTOM_DISPLAY.fullmatch(name)
    if display:
        return fieldmap.CUSTOM_PREFIX + display.group(1).lower().replace(" ", "_")
    return _KEYS_BY_SPELLING.get(_squash(name), name)


def flatten(
    obj: Mapping[str, Any], prefix: str = "", dropped: list[str] | None = None
) -> dict[str, Any]:
    """``{"company": {"name": "Acme"}}`` -> ``{"company.name": "Acme"}``.

    Objects under a key that must hold a single value stay whole, so reading that key later
    reports a wrong type instead of the value silently disappearing. ``klaviyo.custom`` keeps
    its values whole too: a custom property may hold an object.
    """
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        written = f"{prefix}{key}".strip()
        name = canonical_key(written)
        if isinstance(value, Mapping) and name not in SCALAR_KEYS:
            if name == CUSTOM_OBJECT_KEY:
                for prop, prop_value in value.items():
                    flat[f"{fieldmap.CUSTOM_PREFIX}{prop}"] = prop_value
            else:
                flat.update(flatten(value, f"{name}.", dropped))
        elif name not in flat or name == written:  # the key as written beats an alias
            flat[name] = value
        elif dropped is not None:
            dropped.append(written)  # an alias of a key the lead also has as written
    return flat


def is_known(key: str) -> bool:
    """Whether the bundle reads a (canonical, flat) key."""
    prefix = fieldmap.CUSTOM_PREFIX
    return key in SCALAR_KEYS or key in READ_KEYS or (key.startswith(prefix) and key != prefix)


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and lists nest more than ``limit`` levels (iterative: any depth)."""
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            if level > limit:
                return True
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, level + 1) for child in children)
    return False


def non_finite(value: Any) -> bool:
    """Whether a JSON value holds NaN or an infinity anywhere (JSON has neither)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def finite(value: Any) -> Any:
    """A JSON value with NaN and infinities as null, so it serialises as valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def leads_in(payload: Any) -> list[Any] | None:
    """``{"leads": [...]}`` -> the list; anything else -> None (the payload is one lead)."""
    if isinstance(payload, Mapping) and set(payload) == {"leads"}:
        leads = payload["leads"]
        if isinstance(leads, list):
            return leads
    return None


def ensure_object(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise outcomes.LEAD_NOT_OBJECT()
    return payload

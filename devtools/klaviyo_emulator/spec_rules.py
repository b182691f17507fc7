"""Klaviyo's rules for each operation the emulator serves, read from the OpenAPI document.

Per operation the document carries the route, ``x-klaviyo-scopes``, ``x-klaviyo-ratelimit``
(burst, steady and sometimes daily), ``x-klaviyo-filters`` (field -> operators in ``single``
and/or ``list`` form -> value type), the ``sort`` enum, ``page[size]`` bounds and default, and
the enums of ``fields[...]``, ``additional-fields[...]`` and ``include``. More rules live only
in the operation's prose and are read from it: stricter limits while a parameter value is
used ("Rate limits when using the `include=list` parameter ..."), the payload cap ("The
maximum allowed payload size is 100KB"), the cap per item of a bulk body ("The maximum
allowed payload size per-profile is 100KB"), the largest string ("A single string cannot
exceed 100KB") and how many items one request may carry ("Accepts up to 10,000 profiles per
request", "Maximum number of profiles per call: 100", ...).

The emulator reads the document when it is next to the repository and otherwise the table
``spec_rules.json`` generated from it (only the served operations), so a clone without the
document is just as strict. ``make spec-rules`` regenerates the table (``main`` below); a
test fails when it is stale.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .filters import FieldRule

TABLE_PATH = Path(__file__).with_name("spec_rules.json")
WINDOW_SECONDS = {"burst": 1, "steady": 60, "daily": 86_400}
_UNITS = {"s": "burst", "m": "steady", "d": "daily"}
_ENUM_PARAMETER = re.compile(r"^(fields|additional-fields)\[[\w-]+\]$|^include$")
_PARAMETER_LIMIT = re.compile(
    r"Rate limits when using the `([^`=]+)=([^`]+)` parameter[^<]*<br>"
    r"Burst: `(\d+)/s`<br>Steady: `(\d+)/m`"
)
_SIZE = r"(\d+)\s*(KB|MB)"
_PAYLOAD_LIMIT = re.compile(r"maximum allowed payload size is " + _SIZE, re.IGNORECASE)
_ITEM_PAYLOAD_LIMIT = re.compile(r"maximum allowed payload size per-\w+ is " + _SIZE, re.IGNORECASE)
_STRING_LIMIT = re.compile(r"single string cannot exceed " + _SIZE, re.IGNORECASE)
# How many items (profiles, events) one request may carry; each operation words it its own way.
_ITEM_LIMITS = (
    re.compile(r"Accepts up to ([\d,]+) \w+ per request"),
    re.compile(r"accepts a maximum of ([\d,]+) \w+ per call"),
    re.compile(r"Maximum number of \w+ per call: ([\d,]+)"),
    re.compile(r"Maximum number of \w+ can be submitted for \w+: ([\d,]+)"),
)
_SPEC_PATH_PARTS = ("..", "shared", "klaviyo", "openapi-2026-07-15.json")


def default_spec_path() -> Path:
    """Where the project keeps Klaviyo's document: ``../shared/klaviyo`` next to the repo."""
    return Path(__file__).resolve().parents[2].joinpath(*_SPEC_PATH_PARTS)


@dataclass(frozen=True)
class PageSize:
    default: int
    minimum: int
    maximum: int


@dataclass(frozen=True)
class ParameterLimit:
    """A stricter limit that also counts while ``parameter`` asks for ``value``."""

    parameter: str
    value: str
    limits: Mapping[str, int]

    @property
    def bucket(self) -> str:
        return f"{self.parameter}={self.value}"


@dataclass(frozen=True)
class OperationRules:
    operation_id: str
    method: str
    path: str
    scopes: tuple[str, ...]
    limits: Mapping[str, int]  # window name ("burst", "steady", "daily") -> requests
    filters: Mapping[str, FieldRule] | None = None  # None: the operation takes no filter
    sort: tuple[str, ...] | None = None  # the enum, descending forms included
    page_size: PageSize | None = None
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    parameter_limits: tuple[ParameterLimit, ...] = ()
    body_limit: int | None = None  # bytes
    item_limit: int | None = None  # items (profiles, events) one request may carry
    item_body_limit: int | None = None  # bytes of one item of a bulk body
    string_limit: int | None = None  # bytes of any one string in the body

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "scopes": list(self.scopes),
            "limits": dict(self.limits),
            "filters": None
            if self.filters is None
            else {name: _field_json(rule) for name, rule in self.filters.items()},
            "sort": None if self.sort is None else list(self.sort),
            "page_size": None
            if self.page_size is None
            else {
                "default": self.page_size.default,
                "minimum": self.page_size.minimum,
                "maximum": self.page_size.maximum,
            },
            "enums": {name: list(values) for name, values in self.enums.items()},
            "parameter_limits": [
                {"parameter": p.parameter, "value": p.value, "limits": dict(p.limits)}
                for p in self.parameter_limits
            ],
            "body_limit": self.body_limit,
            "item_limit": self.item_limit,
            "item_body_limit": self.item_body_limit,
            "string_limit": self.string_limit,
        }

    @classmethod
    def from_json(cls, operation_id: str, data: Mapping[str, Any]) -> OperationRules:
        filters = data.get("filters")
        page = data.get("page_size")
        sort = data.get("sort")
        return cls(
            operation_id=operation_id,
            method=data["method"],
            path=data["path"],
            scopes=tuple(data["scopes"]),
            limits=dict(data["limits"]),
            filters=None
            if filters is None
            else {name: _field_rule(rule) for name, rule in filters.items()},
            sort=None if sort is None else tuple(sort),
            page_size=None if page is None else PageSize(**page),
            enums={name: tuple(values) for name, values in data.get("enums", {}).items()},
            parameter_limits=tuple(
                ParameterLimit(p["parameter"], p["value"], dict(p["limits"]))
                for p in data.get("parameter_limits", ())
            ),
            body_limit=data.get("body_limit"),
            item_limit=data.get("item_limit"),
            item_body_limit=data.get("item_body_limit"),
            string_limit=data.get("string_limit"),
        )


class SpecRules(Mapping[str, OperationRules]):
    """The rules of every served operation, by operationId."""

    def __init__(self, operations: Iterable[OperationRules], source: str) -> None:
        self._operations = {op.operation_id: op for op in operations}
        self.source = source  # the document's path, or the packaged table's

    def __getitem__(self, operation_id: str) -> OperationRules:
        return self._operations[operation_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._operations)

    def __len__(self) -> int:
        return len(self._operations)

    def to_json(self) -> dict[str, Any]:
        return {op_id: self._operations[op_id].to_json() for op_id in sorted(self._operations)}


# ---- extraction ---------------------------------------------------------------------------


def extract(spec: Mapping[str, Any], operation_ids: Iterable[str]) -> SpecRules:
    """The rules of ``operation_ids`` as the document states them; KeyError when one is
    missing from it."""
    found: dict[str, tuple[str, str, Mapping[str, Any], Mapping[str, Any]]] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = (method.upper(), path, item, operation)
    rules = []
    for operation_id in operation_ids:
        method, path, item, operation = found[operation_id]
        parameters = [
            _deref(spec, p) for p in (*item.get("parameters", ()), *operation["parameters"])
        ]
        rules.append(_operation_rules(operation_id, method, path, operation, parameters))
    return SpecRules(rules, "document")


def _operation_rules(
    operation_id: str,
    method: str,
    path: str,
    operation: Mapping[str, Any],
    parameters: list[Mapping[str, Any]],
) -> OperationRules:
    query = {p["name"]: p.get("schema", {}) for p in parameters if p.get("in") == "query"}
    enums = {
        name: tuple(schema["items"]["enum"])
        for name, schema in query.items()
        if _ENUM_PARAMETER.match(name) and "enum" in schema.get("items", {})
    }
    page = query.get("page[size]")
    description = operation.get("description", "")
    return OperationRules(
        operation_id=operation_id,
        method=method,
        path=path,
        scopes=tuple(operation.get("x-klaviyo-scopes", ())),
        limits=_limits(operation.get("x-klaviyo-ratelimit", {})),
        filters=filter_rules(operation.get("x-klaviyo-filters", {})) if "filter" in query else None,
        sort=tuple(query["sort"]["enum"]) if "enum" in query.get("sort", {}) else None,
        page_size=None
        if page is None
        else PageSize(page.get("default", 20), page.get("minimum", 1), page["maximum"]),
        enums=enums,
        parameter_limits=_parameter_limits(description, enums),
        body_limit=_size(_PAYLOAD_LIMIT.search(description)),
        item_limit=_item_limit(description),
        item_body_limit=_size(_ITEM_PAYLOAD_LIMIT.search(description)),
        string_limit=_size(_STRING_LIMIT.search(description)),
    )


def _size(found: re.Match[str] | None) -> int | None:
    """``100KB`` -> 102400, ``5MB`` -> 5242880 (binary units, as the global 5 MB cap)."""
    if found is None:
        return None
    return int(found[1]) * (1024 if found[2].upper() == "KB" else 1024 * 1024)


def _item_limit(description: str) -> int | None:
    for pattern in _ITEM_LIMITS:
        found = pattern.search(description)
        if found:
            return int(found[1].replace(",", ""))
    return None


def _limits(declared: Mapping[str, str]) -> dict[str, int]:
    """``{"burst": "75/s", "steady": "750/m"}`` -> ``{"burst": 75, "steady": 750}``."""
    out = {}
    for text in declared.values():
        count, unit = text.split("/")
        out[_UNITS[unit]] = int(count)
    return out


def filter_rules(declared: Mapping[str, Any]) -> dict[str, FieldRule]:
    return {
        name: FieldRule(
            kind=_value_kind(entry.get("value") or {}),
            single=frozenset(entry["operators"].get("single", ())),
            listed=frozenset(entry["operators"].get("list", ())),
            enum=tuple(entry["value"]["enum"]) if "enum" in (entry.get("value") or {}) else None,
        )
        for name, entry in declared.items()
    }


def _value_kind(value: Mapping[str, Any]) -> str:
    if value.get("format") == "date-time":
        return "datetime"
    return str(value.get("type", "string"))


def _parameter_limits(
    description: str, enums: Mapping[str, tuple[str, ...]]
) -> tuple[ParameterLimit, ...]:
    out = []
    for parameter, value, burst, steady in _PARAMETER_LIMIT.findall(description):
        # The prose says ``include=list`` where the enum value is ``lists``.
        allowed = enums.get(parameter, ())
        if value not in allowed:
            value = next((v for v in allowed if v.startswith(value)), value)
        out.append(ParameterLimit(parameter, value, {"burst": int(burst), "steady": int(steady)}))
    return tuple(out)


def _field_json(rule: FieldRule) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": rule.kind,
        "single": sorted(rule.single),
        "list": sorted(rule.listed),
    }
    if rule.enum is not None:
        data["enum"] = list(rule.enum)
    return data


def _field_rule(data: Mapping[str, Any]) -> FieldRule:
    enum = data.get("enum")
    return FieldRule(
        kind=data["kind"],
        single=frozenset(data["single"]),
        listed=frozenset(data["list"]),
        enum=None if enum is None else tuple(enum),
    )


def _deref(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while isinstance(node.get("$ref"), str):
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


# ---- loading ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _from_document(path: str, mtime_ns: int, operation_ids: tuple[str, ...]) -> SpecRules:
    with open(path, encoding="utf-8") as handle:
        rules = extract(json.load(handle), operation_ids)
    rules.source = path
    return rules


def from_table(path: Path = TABLE_PATH) -> SpecRules:
    data = json.loads(path.read_text(encoding="utf-8"))
    return SpecRules(
        (OperationRules.from_json(op_id, entry) for op_id, entry in data.items()), str(path)
    )


def load(spec_path: str | Path | None, operation_ids: Iterable[str]) -> SpecRules:
    """The rules of ``operation_ids`` from the document at ``spec_path`` (None: the
    project's copy), or from the packaged table when there is no document."""
    path = Path(spec_path) if spec_path is not None else default_spec_path()
    if path.exists():
        resolved = path.resolve()
        served = tuple(sorted(operation_ids))
        return _from_document(str(resolved), resolved.stat().st_mtime_ns, served)
    return from_table()


def render(rules: SpecRules) -> str:
    return json.dumps(rules.to_json(), indent=1, sort_keys=True) + "\n"


def main(operation_ids: Iterable[str], argv: list[str] | None = None) -> int:
    """``make spec-rules``: the table of ``operation_ids`` (the served ones, which
    ``operations.SERVED_OPERATIONS`` names) rewritten from the document, or ``--check``ed."""
    parser = argparse.ArgumentParser(
        prog="make spec-rules",
        description=f"Regenerate {TABLE_PATH.name} from Klaviyo's OpenAPI document.",
    )
    parser.add_argument("--spec", type=Path, default=default_spec_path())
    parser.add_argument("--check", action="store_true", help="fail when the table is stale")
    args = parser.parse_args(argv)
    if not args.spec.exists():
        print(f"no OpenAPI document at {args.spec}", file=sys.stderr)
        return 2
    text = render(extract(json.loads(args.spec.read_text(encoding="utf-8")), operation_ids))
    if args.check:
        stale = not TABLE_PATH.exists() or TABLE_PATH.read_text(encoding="utf-8") != text
        if stale:
            print(f"{TABLE_PATH.name} is stale: run make spec-rules", file=sys.stderr)
        return 1 if stale else 0
    TABLE_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {TABLE_PATH}")
    return 0

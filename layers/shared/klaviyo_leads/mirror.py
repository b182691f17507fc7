"""Mirror sync: a Klaviyo list made exactly the people of a lead file.

A file under ``mirror/<list_id>/`` in the lead-files bucket (or an Add Profile to List file whose
metadata says ``mirror: true``, its list in ``klaviyo.list_id``) names the people the list must
hold. The people missing from the list are added; members the file does not name are removed
from the list: a removal, never an unsubscribe, so nobody's consent changes. People are found as
Add Profile to List finds them (the lead's identifier, contract section 3); one without a profile
is not added, and the report says how many.

The plan comes first: the list's members are read through its list-profiles pages, the file's
people matched against them, the rest looked up a hundred to a search, and
``results/<key>.report.json`` says how many would be added, kept and removed before anything
is written. A plan that would
remove more than ``MIRROR_MAX_REMOVAL_PERCENT`` of the list (20 % unless the stack says
otherwise) is refused unless the file's metadata confirms it (``mirror-confirm-removals``: at
least the number of removals, or ``all``). Under ``dry-run/`` only the plan is written. Then the
removals and the additions go out, a thousand profiles to a call, the two side by side (each
has its own rate limit), every call through the client's pacer, within its share of the account.
``results/<key>.mirror.json`` says what was done. A file sent again changes nothing: its plan
adds and removes nobody.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import IO, Any, TypeVar, cast
from urllib.parse import urlencode

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.lookup import klaviyo_list, path_id, resources, search_value
from klaviyo_leads.config import Settings
from klaviyo_leads.context import Context
from klaviyo_leads.lead.body import ensure_object
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.lead_files import (
    DRY_RUN_PREFIX,
    RESULTS_PREFIX,
    FileProblem,
    Layout,
    defaults_of,
    is_jsonl_name,
    lead_of,
    objects_of,
    output_key,
    put_json,
    read_rows,
)
from klaviyo_leads.outcomes import Result

PREFIX = "mirror/"
ADD_TO_LIST = "add_profile_to_list/"
SETTING = "mirror"  # metadata of an Add Profile to List file: mirror its list
CONFIRM = "mirror-confirm-removals"
DEFAULT_MAX_REMOVAL_SHARE = 0.2
MAX_IDS_PER_CALL = 1000  # add_profiles_to_list and remove_profiles_from_list take 1000
FIRST_ROWS = 10  # rows named per reason in the report
SORT = "-updated"  # several profiles match: the newest update, the contract's default
# Time kept from the invocation's deadline for writing the results.
MARGIN_SECONDS = 10.0
_PAGE = {"fields[profile]": "email,phone_number,external_id,joined_group_at", "page[size]": "100"}
# Slices of a list read side by side, and searches made side by side: a page or a search takes
# Klaviyo about a fifth of a second, and the endpoints' limits allow 12 calls a second.
STREAMS = 8
SLICES_PER_STREAM = 4
LIST_PAGES = "get_profiles_for_list"  # the operation (and pacer bucket) of list pages
# A stream whose pacer holds it back longer than this hands its slice to the others.
HAND_BACK_SECONDS = 2.0
_TRUE = {"true", "yes", "1", "on"}


Item = TypeVar("Item")
Answer = TypeVar("Answer")
Parallel = Callable[[Callable[[Any], Any], list[Any]], list[Any]]
# A context for one stream of calls: a client, and so a pacer, of its own. A pacer counts one
# stream's calls (its own calls, the rest of the account's); streams side by side are paced as
# containers side by side are, each taking a share of what the account leaves.
Streams = Callable[[], Context]


def threads(work: Callable[[Item], Answer], items: list[Item]) -> list[Answer]:
    """``work`` on every item, each in a thread of its own; the answers in the items' order."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="mirror") as pool:
        return list(pool.map(work, items))


def is_mirror_key(key: str) -> bool:
    return key.removeprefix(DRY_RUN_PREFIX).startswith(PREFIX)


def wanted(key: str, metadata: Mapping[str, str]) -> bool:
    """Whether an uploaded object is a mirror file: by its prefix, or an Add Profile to List
    file with the mirror setting."""
    if is_mirror_key(key):
        return True
    setting = str(_lower(metadata).get(SETTING, "")).strip().lower()
    return key.removeprefix(DRY_RUN_PREFIX).startswith(ADD_TO_LIST) and setting in _TRUE


def takes(s3: Any, bucket: str, key: str, version_id: str | None = None) -> bool:
    """Whether the mirror function takes this object (the lead-file splitter then leaves it)."""
    if is_mirror_key(key):
        return True
    if not key.removeprefix(DRY_RUN_PREFIX).startswith(ADD_TO_LIST):
        return False
    head = s3.head_object(
        Bucket=bucket, Key=key, **({"VersionId": version_id} if version_id else {})
    )
    return wanted(key, head.get("Metadata") or {})


def _lower(metadata: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): v for k, v in metadata.items()}


@dataclass
class Members:
    """The list's members: their ids, and their ids by identifier value."""

    ids: set[str] = field(default_factory=set)
    by_value: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"email": {}, "phone_number": {}, "external_id": {}}
    )

    def add(self, profile: Mapping[str, Any]) -> None:
        profile_id = str(profile["id"])
        self.ids.add(profile_id)
        attributes = profile.get("attributes") or {}
        for name, index in self.by_value.items():
            value = attributes.get(name)
            if isinstance(value, str) and value:
                index.setdefault(lookup.key(name, value), profile_id)

    def profiles(self) -> list[tuple[str, dict[str, str]]]:
        """(id, identifiers) of every member, for merging slices read apart."""
        values: dict[str, dict[str, str]] = {profile_id: {} for profile_id in self.ids}
        for name, index in self.by_value.items():
            for value, profile_id in index.items():
                values[profile_id][name] = value
        return list(values.items())

    def find(self, identifier: str, value: str) -> str | None:
        if identifier == "klaviyo_id":
            return value if value in self.ids else None
        return self.by_value[identifier].get(lookup.key(identifier, value))


def read_members(streams: Streams, list_id: str, parallel: Parallel = threads) -> Members:
    """Every member, a hundred a page (their identifiers only). A long list is read in
    slices of its join times, ``STREAMS`` side by side: one page follows another only after
    Klaviyo's answer, and one chain of pages is slower than the endpoint's limit. There are
    ``SLICES_PER_STREAM`` times more slices than streams, each stream taking the next slice
    left when it is done with one: join times bunch, and the streams end together."""
    path = f"/api/lists/{path_id(list_id, 'list')}/profiles"
    members = Members()
    ctx = streams()
    oldest = _page(ctx, path, {**_PAGE, "sort": "joined_group_at"})
    for profile in oldest.items:
        members.add(profile)
    if oldest.next_page is None or not oldest.items:
        return members
    newest = _page(ctx, path, {**_PAGE, "sort": "-joined_group_at"})
    before = len(members.ids)
    for profile in newest.items:
        members.add(profile)
    if newest.next_page is None or len(members.ids) < before + len(newest.items):
        return members  # the two ends met: 200 members at most, every one seen
    start, end = _joined(oldest.items[0]), _joined(newest.items[0])
    if start is None or end is None:
        return _read_slice(ctx, path, None, None, members)  # no join times: one chain
    # Whole seconds, as Klaviyo writes join times; the last slice ends after the newest.
    first, last = int(start.timestamp()), int(end.timestamp()) + 1
    count = STREAMS * SLICES_PER_STREAM
    cuts = sorted({first + (last - first) * i // count for i in range(count)} | {last})
    work = Slices([_slice_query(path, low, high) for low, high in pairwise(cuts)])
    for part in parallel(lambda _: _read_slices(streams(), work), list(range(STREAMS))):
        for profile_id, values in part.profiles():
            members.add({"id": profile_id, "attributes": values})
    return members


class Slices:
    """The slices of a list still to read, as the page each one goes on from, shared by the
    streams. A stream whose pacer would hold it back while others read hands its slice back
    and stops: the pacers of streams side by side take each other's calls for the rest of the
    account's, and one may find no share left in a window while the others go on. The last
    stream never stops: the others' pace it learnt fades as it reads alone."""

    def __init__(self, pages: list[str]) -> None:
        self._pages = pages
        self._lock = threading.Lock()
        self._reading = STREAMS

    def take(self) -> str | None:
        with self._lock:
            return self._pages.pop(0) if self._pages else None

    def hand_back(self, page: str) -> bool:
        """Give the slice to another stream (True: this one stops), unless it is the last."""
        with self._lock:
            if self._reading <= 1:
                return False
            self._pages.append(page)
            self._reading -= 1
            return True

    def done(self) -> None:
        with self._lock:
            self._reading -= 1


def _slice_query(path: str, start: int, end: int) -> str:
    """The first page of the members who joined in [start, end), as a URL path and query."""
    query = {
        **_PAGE,
        "sort": "joined_group_at",
        "filter": f"greater-or-equal(joined_group_at,{_moment(start)}),"
        f"less-than(joined_group_at,{_moment(end)})",
    }
    return f"{path}?{urlencode(query)}"


def _read_slices(ctx: Context, work: Slices) -> Members:
    """One stream: slices, page by page, until none is left (or it hands its slice back)."""
    members = Members()
    page: str | None = work.take()
    while page is not None:
        wait = ctx.client.check_pace(LIST_PAGES, ctx.budget)
        if wait > HAND_BACK_SECONDS and work.hand_back(page):
            return members
        answer = _page(ctx, page, None)
        for profile in answer.items:
            members.add(profile)
        page = answer.next_page or work.take()
    work.done()
    return members


@dataclass
class _Page:
    items: list[dict[str, Any]]
    next_page: str | None


def _page(ctx: Context, path: str, query: Mapping[str, str] | None) -> _Page:
    response = ctx.call("GET", path, query=query, handled=(404,))
    if response.status == 404:
        raise outcomes.unknown_target("list", 404, response.errors)
    links = response.body.get("links") if isinstance(response.body, dict) else None
    next_page = links.get("next") if isinstance(links, dict) else None
    return _Page(resources(response), next_page if isinstance(next_page, str) else None)


def _read_slice(
    ctx: Context, path: str, start: int | None, end: int | None, members: Members
) -> Members:
    """The members who joined in [start, end) (every member when unbounded), page by page."""
    query: dict[str, str] | None = {**_PAGE, "sort": "joined_group_at"}
    if start is not None and end is not None:
        query["filter"] = (  # type: ignore[index]
            f"greater-or-equal(joined_group_at,{_moment(start)}),"
            f"less-than(joined_group_at,{_moment(end)})"
        )
    next_page: str | None = path
    while next_page is not None:
        page = _page(ctx, next_page, query)
        for profile in page.items:
            members.add(profile)
        next_page, query = page.next_page, None  # the next link carries the whole query
    return members


def _joined(profile: Mapping[str, Any]) -> datetime | None:
    value = (profile.get("attributes") or {}).get("joined_group_at")
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def _moment(seconds: int) -> str:
    """A datetime as Klaviyo's filters take it: ISO 8601, unquoted."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@dataclass
class Plan:
    """What the file asks of the list."""

    list_id: str
    list_name: str | None = None
    members_before: int = 0
    rows_read: int = 0
    add: dict[str, int] = field(default_factory=dict)  # profile id -> its first row
    keep: set[str] = field(default_factory=set)
    no_profile: list[int] = field(default_factory=list)
    refused: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)

    def refuse(self, row: int, result: Result) -> None:
        entry = self.refused.setdefault((result.outcome.value, result.reason or ""), [0, []])
        entry[0] += 1
        if len(entry[1]) < FIRST_ROWS:
            entry[1].append(row)

    @property
    def removal_share(self) -> float:
        return len(self.remove) / self.members_before if self.members_before else 0.0

    def as_json(self) -> dict[str, Any]:
        refused = sorted(self.refused.items(), key=lambda item: (-item[1][0], item[0]))
        return {
            "list_id": self.list_id,
            "list_name": self.list_name,
            "members_before": self.members_before,
            "rows_read": self.rows_read,
            "would_add": len(self.add),
            "would_keep": len(self.keep),
            "would_remove": len(self.remove),
            "members_after": len(self.keep) + len(self.add),
            "removal_share": round(self.removal_share, 4),
            "rows_without_profile": {"count": len(self.no_profile), "first": self.no_profile[:10]},
            "rows_refused": [
                {"outcome": outcome, "reason": reason, "count": count, "first_rows": rows}
                for (outcome, reason), (count, rows) in refused
            ],
        }


def plan(
    streams: Streams,
    list_id: str,
    rows: Any,
    defaults: Mapping[str, Any],
    parallel: Parallel = threads,
) -> Plan:
    """Read the list and the file; what would be added, kept and removed."""
    ctx = streams()
    group = klaviyo_list(ctx, list_id)
    members = read_members(streams, list_id, parallel)
    planned = Plan(list_id, group.name, len(members.ids))
    unmatched: dict[str, dict[str, list[int]]] = {}  # identifier -> value -> rows
    for row in rows:
        planned.rows_read += 1
        if row.problem is not None:
            planned.refuse(row.number, row.problem)
            continue
        try:
            lead = Lead.from_object(ensure_object(lead_of(row, defaults)))
            identifier = lead.identifier()
            value = search_value(ctx, lead, identifier)
            if value is None:
                raise outcomes.NO_IDENTIFIER()
        except Result as problem:
            planned.refuse(row.number, problem)
            continue
        member = members.find(identifier, value)
        if member is not None:
            planned.keep.add(member)
        else:
            unmatched.setdefault(identifier, {}).setdefault(lookup.key(identifier, value), [])
            unmatched[identifier][lookup.key(identifier, value)].append(row.number)
    for identifier, by_value in unmatched.items():
        found = _search(streams, identifier, list(by_value), parallel)
        for value, numbers in by_value.items():
            if value in found.problems:
                for number in numbers:
                    planned.refuse(number, found.problems[value])
                continue
            profile = found.first(value)
            if profile is None:
                planned.no_profile += numbers
            elif str(profile["id"]) in members.ids:  # matched by another identifier
                planned.keep.add(str(profile["id"]))
            else:
                planned.add.setdefault(str(profile["id"]), numbers[0])
    planned.remove = sorted(members.ids - planned.keep)
    return planned


def _search(
    streams: Streams, identifier: str, values: list[str], parallel: Parallel = threads
) -> lookup.Found:
    """The profiles of ``values`` (a hundred to a search), ``STREAMS`` searches side by side."""
    share = -(-len(values) // STREAMS)
    parts = [values[i : i + share] for i in range(0, len(values), share)] if values else []
    found = lookup.Found()

    def search(part: list[str]) -> lookup.Found:
        return lookup.search(streams(), identifier, SORT, part, full=False)

    for result in parallel(search, parts):
        found.matches.update(result.matches)
        found.problems.update(result.problems)
    return found


@dataclass
class Done:
    """What the writes did."""

    added: int = 0
    removed: int = 0
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "failed": [
                {"change": change, "reason": reason, "profiles": count}
                for (change, reason), count in sorted(self.failed.items())
            ],
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def apply(streams: Streams, planned: Plan, parallel: Parallel = threads) -> Done:
    """The removals and the additions, a thousand profiles a call, side by side."""
    done = Done()
    path = f"/api/lists/{path_id(planned.list_id, 'list')}/relationships/profiles"

    def change(method: str, ids: list[str]) -> tuple[int, Counter[tuple[str, str]]]:
        changed, failed, ctx = 0, Counter[tuple[str, str]](), streams()
        for start in range(0, len(ids), MAX_IDS_PER_CALL):
            chunk = ids[start : start + MAX_IDS_PER_CALL]
            body = {"data": [{"type": "profile", "id": profile_id} for profile_id in chunk]}
            try:
                ctx.call(method, path, body=body, expect=(204,))
            except Result as problem:
                failed[(method, problem.reason or problem.outcome.value)] += len(chunk)
                continue
            changed += len(chunk)
        return changed, failed

    changes = [("DELETE", planned.remove), ("POST", list(planned.add))]
    (done.removed, removal_failures), (done.added, add_failures) = parallel(
        lambda item: change(*item), changes
    )
    for (method, reason), count in (removal_failures + add_failures).items():
        done.failed[("remove" if method == "DELETE" else "add", reason)] += count
    return done


# -- the file ----------------------------------------------------------------------------------


@dataclass
class MirrorServices:
    """What a mirror run needs: S3, a Klaviyo context maker, and the stack's removal cap."""

    s3: Any
    # A context for a stream of calls (``Streams``) with this many seconds of budget.
    context: Callable[[float], Context]
    max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE
    parallel: Parallel = threads  # how calls go side by side (a benchmark's virtual clock)


def list_id_of(key: str, metadata: Mapping[str, str]) -> str | None:
    """The list: ``mirror/<list_id>/...``, or an Add Profile to List file's ``klaviyo.list_id``."""
    rest = key.removeprefix(DRY_RUN_PREFIX)
    if rest.startswith(PREFIX):
        list_id, _, name = rest[len(PREFIX) :].partition("/")
        return list_id if list_id and name else None
    defaults, _ = defaults_of(metadata)
    value = defaults.get("klaviyo.list_id")
    return value.strip() if isinstance(value, str) and value.strip() else None


def confirmed(metadata: Mapping[str, str], removals: int) -> bool:
    """Whether the file's metadata confirms this many removals."""
    value = str(_lower(metadata).get(CONFIRM, "")).strip().lower()
    if value == "all":
        return True
    return value.isdigit() and int(value) >= removals


def take_file(
    services: MirrorServices,
    bucket: str,
    key: str,
    version_id: str | None = None,
    seconds: float = 840.0,
) -> dict[str, Any]:
    """Plan, report, and (unless a dry run or refused) apply; the report."""
    s3 = services.s3
    version = {"VersionId": version_id} if version_id else {}
    head = s3.head_object(Bucket=bucket, Key=key, **version)
    metadata = {str(k): str(v) for k, v in (head.get("Metadata") or {}).items()}
    dry_run = key.startswith(DRY_RUN_PREFIX)
    report: dict[str, Any] = {
        "file": {"bucket": bucket, "key": key, "version_id": head.get("VersionId")},
        "mirror": True,
        "dry_run": dry_run,
        "accepted": False,
        "problem": None,
        "max_removal_share": services.max_removal_share,
        "removals_confirmed": False,
    }
    list_id = list_id_of(key, metadata)
    started = time.monotonic()
    planned: Plan | None = None
    if list_id is None:
        report["problem"] = (
            "The file names no list: put it under mirror/<list_id>/, or give an Add Profile "
            "to List file the metadata klaviyo.list_id"
        )
    else:
        deadline = time.monotonic() + seconds - MARGIN_SECONDS

        def streams() -> Context:
            return services.context(max(1.0, deadline - time.monotonic()))

        body = s3.get_object(Bucket=bucket, Key=key, **version)["Body"]
        defaults, _ = defaults_of(metadata)
        try:
            rows = read_rows(cast(IO[bytes], body), True if is_jsonl_name(key) else None, Layout())
            planned = plan(streams, list_id, rows, defaults, services.parallel)
        except FileProblem as problem:
            report["problem"] = str(problem)
        except Result as problem:  # the list cannot be read: nothing is planned or written
            report["problem"] = problem.reason
        if planned is not None:
            report.update(planned.as_json())
            report["removals_confirmed"] = confirmed(metadata, len(planned.remove))
            over = planned.removal_share > services.max_removal_share
            if over and not report["removals_confirmed"]:
                report["problem"] = (
                    f"The file would remove {len(planned.remove)} of the list's "
                    f"{planned.members_before} members ({planned.removal_share:.0%}), more than "
                    f"the stack allows ({services.max_removal_share:.0%}, "
                    f"MirrorMaxRemovalPercent): confirm with the metadata {CONFIRM}: "
                    f"{len(planned.remove)}"
                )
            else:
                report["accepted"] = True
    report["planned_in_seconds"] = round(time.monotonic() - started, 3)
    report["results"] = None if dry_run or not report["accepted"] else results_key(key)
    # The report first: when it cannot be written this raises, and nothing is changed.
    put_json(s3, bucket, report_key(key), report)
    if dry_run or not report["accepted"] or planned is None:
        return report
    done = apply(streams, planned, services.parallel)
    put_json(s3, bucket, results_key(key), {"report": report_key(key), **done.as_json()})
    report["done"] = done.as_json()
    return report


def report_key(key: str) -> str:
    """Where a mirror file's report goes: under ``results/``, as every lead file's does."""
    return output_key(key, ".report.json", RESULTS_PREFIX)


def results_key(key: str) -> str:
    return output_key(key, ".mirror.json", RESULTS_PREFIX)


def max_removal_share(env: Mapping[str, str]) -> float:
    """``MIRROR_MAX_REMOVAL_PERCENT`` as a share (0-100 %); the default when unset or wrong."""
    try:
        percent = float(env.get("MIRROR_MAX_REMOVAL_PERCENT") or 100 * DEFAULT_MAX_REMOVAL_SHARE)
    except ValueError:
        return DEFAULT_MAX_REMOVAL_SHARE
    return percent / 100 if 0 <= percent <= 100 else DEFAULT_MAX_REMOVAL_SHARE


_services: MirrorServices | None = None


def services() -> MirrorServices:
    """The container's: S3, and Klaviyo as the actions' runtime has it (key, pacer, share)."""
    global _services
    if _services is None:
        import boto3

        from klaviyo_leads.aws.secrets import ApiKeyProvider

        settings = Settings.from_env()
        api_key = ApiKeyProvider(settings.api_key_secret_id)  # read once, for every stream
        _services = MirrorServices(
            boto3.client("s3"), stream_contexts(settings, api_key), max_removal_share(os.environ)
        )
    return _services


def stream_contexts(
    settings: Settings, api_key: Callable[[bool], str], **wiring: Any
) -> Callable[[float], Context]:
    """Contexts for streams of calls side by side: each with a client and pacer of its own
    (``Runtime.wired``'s other parts, such as a clock, as ``wiring`` gives them)."""
    from klaviyo_leads.runtime import Runtime

    def context(seconds: float) -> Context:
        runtime = Runtime.wired(settings, api_key, **wiring)
        return runtime.context(runtime.budget(seconds))

    return context


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A new object in the lead-files bucket: mirror its list when it is a mirror file."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    seconds = remaining() / 1000 if callable(remaining) else 840.0
    taken = []
    for bucket, key, version_id in objects_of(event):
        if key.endswith("/") or not takes(services().s3, bucket, key, version_id):
            continue
        report = take_file(services(), bucket, key, version_id, seconds)
        taken.append({"key": key, "accepted": report["accepted"], "dry_run": report["dry_run"]})
    return {"files": taken}

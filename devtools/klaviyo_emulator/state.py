"""Account state: profiles, lists, segments, identity rules and consent changes.

One re-entrant lock guards everything; request handlers and test seeding call in from
different threads. Methods raise :class:`ApiError` for what Klaviyo would reject.

What Klaviyo does later goes through the timeline (see ``timeline.py``): subscribe jobs and
deletions after their delay, segment membership after ``segment_lag``, and the search index
after ``search_lag`` (``GET /api/profiles/{id}`` and the 409 identity checks never lag).
"""

from __future__ import annotations

import math
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .attributes import check_identifiers, clean_attributes
from .config import OPT_IN_CHOICES, Config
from .errors import NO_IDENTIFIER, UNKNOWN_LIST, ApiError, duplicate_profile, invalid, not_found
from .filters import Condition
from .ids import UlidFactory, short_id
from .model import (
    LOCATION_FIELDS,
    STRING_ATTRIBUTES,
    SUBSCRIBED,
    UNSUBSCRIBED,
    ChannelConsent,
    Event,
    ImportItem,
    ImportJob,
    KlaviyoList,
    Profile,
    ProfileSubscription,
    Segment,
    SubscribeJob,
    UnsubscribeJob,
    parse_timestamp,
)
from .resources import profile_resource
from .search_index import SearchIndex
from .segment_definitions import Definition, compile_definition
from .timeline import Timeline

# Suppressions a subscribe job lifts; the spec's prose says SPAM_REPORT, its enum SPAM_COMPLAINT.
LIFTED_SUPPRESSIONS = frozenset({"UNSUBSCRIBE", "USER_SUPPRESSED", "SPAM_COMPLAINT"})
# Suppressions nothing lifts through the API (the spec's ``bulk_unsuppress_profiles``: "suppressed
# profiles with reason INVALID_EMAIL or HARD_BOUNCE remain unchanged"). A subscribe job leaves
# the email consent of such a profile as it was: the documents do not say it records the consent
# anyway, so the stricter reading (the job changes nothing) is taken.
KEPT_SUPPRESSIONS = frozenset({"HARD_BOUNCE", "INVALID_EMAIL"})
# Under double opt-in these wait for the person's confirmation ("It is the same for both
# email and SMS subscribers", help.klaviyo.com, Guide to the Double Opt-In Process).
DOUBLE_OPT_IN_CONSENTS = frozenset({("email", "marketing"), ("sms", "marketing")})
# Confirming by text also confirms email; confirming by email confirms email only (same page).
CONFIRMED_BY = {"email": frozenset({"email"}), "sms": frozenset({"email", "sms"})}
IDENTIFIERS = ("email", "phone_number", "external_id")
IMPORT_PROFILES = "/data/attributes/profiles/data"  # where a bulk import's profiles are
SUPPRESSION_REASONS = (
    "HARD_BOUNCE",
    "INVALID_EMAIL",
    "SPAM_COMPLAINT",
    "UNSUBSCRIBE",
    "USER_SUPPRESSED",
)


def identifiers(profile: Profile) -> dict[str, str | None]:
    return {name: profile.attributes.get(name) for name in IDENTIFIERS}


def _identifier_key(identifier: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value.casefold() if identifier == "email" else value


@dataclass
class _Pending:
    job: SubscribeJob
    consent: ChannelConsent


class Store:
    def __init__(self, *, rng: random.Random, clock: Callable[[], float], config: Config) -> None:
        self.lock = threading.RLock()
        self._rng = rng
        self._clock = clock
        self._ulids = UlidFactory(rng, clock)
        self.config = config
        self.timeline = Timeline(clock)
        self.profiles: dict[str, Profile] = {}
        self.lists: dict[str, KlaviyoList] = {}
        self.segments: dict[str, Segment] = {}
        # identifier -> normalised value -> ids of the profiles holding it, oldest first
        self._holders: dict[str, dict[str, dict[str, None]]] = {k: {} for k in IDENTIFIERS}
        self._pending: dict[tuple[str, str], list[_Pending]] = {}
        # profile id -> the versions filtered search shows: (visible from, snapshot)
        self._search: dict[str, list[tuple[float, Profile]]] = {}
        self._search_index = SearchIndex()
        self._job_counter = 0
        self.import_jobs: dict[str, ImportJob] = {}
        self.events: list[Event] = []
        self._event_keys: set[tuple[str, str, str]] = set()  # (metric, profile id, unique key)
        self._anonymous: dict[str, str] = {}  # anonymous_id -> profile id (never shown)
        # Double opt-in confirmations Klaviyo sent (the person's email or text asking them
        # to confirm), oldest first: what a historical import must not cause.
        self.confirmations: list[dict[str, Any]] = []

    def reset(self, seed: int | None = None) -> None:
        """Empty, as when made; with ``seed``, ids drawn afresh from it (a replay)."""
        with self.lock:
            if seed is not None:
                self._rng.seed(seed)
                self._ulids = UlidFactory(self._rng, self._clock)
            self.timeline.clear()
            self.profiles.clear()
            self.lists.clear()
            self.segments.clear()
            for holders in self._holders.values():
                holders.clear()
            self._pending.clear()
            self._search.clear()
            self._search_index.clear()
            self.import_jobs.clear()
            self.events.clear()
            self._event_keys.clear()
            self._anonymous.clear()
            self.confirmations.clear()

    def settle(self) -> None:
        """Apply every delayed effect that is due by now."""
        with self.lock:
            self.timeline.settle()

    def later(self, delay: float, effect: Callable[[], None]) -> None:
        with self.lock:
            self.timeline.after(delay, effect)

    def now(self) -> datetime:
        """The emulator clock's time (job timestamps, event times, their limits)."""
        return datetime.fromtimestamp(self.timeline.now(), UTC)

    def new_ulid(self) -> str:
        return self._ulids.new()

    def new_uuid(self) -> str:
        """A uuid4 drawn from the seeded generator, so ids repeat with ``seed``."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # ---- lookups -------------------------------------------------------------------------

    def profile(self, profile_id: str) -> Profile:
        with self.lock:
            found = self.profiles.get(profile_id)
            if found is None:
                raise not_found(f"A profile with id {profile_id} does not exist.")
            return found

    def klaviyo_list(self, list_id: str) -> KlaviyoList:
        with self.lock:
            found = self.lists.get(list_id)
            if found is None:
                raise not_found(UNKNOWN_LIST.format(list_id=list_id))
            return found

    def segment(self, segment_id: str) -> Segment:
        with self.lock:
            found = self.segments.get(segment_id)
            if found is None:
                raise not_found(f"A segment with id {segment_id} does not exist.")
            return found

    def holders(self, identifier: str, value: str | None) -> list[str]:
        """Ids of every profile whose ``identifier`` (email, phone_number, external_id) is
        ``value``, oldest first; emails compare case-insensitively."""
        key = _identifier_key(identifier, value)
        return list(self._holders[identifier].get(key, ())) if key is not None else []

    def find_by_email(self, email: str | None) -> str | None:
        return next(iter(self.holders("email", email)), None)

    def find_by_phone(self, phone: str | None) -> str | None:
        return next(iter(self.holders("phone_number", phone)), None)

    def find_by_external_id(self, external_id: str | None) -> str | None:
        holders = [self.profiles[pid] for pid in self.holders("external_id", external_id)]
        # The oldest holder wins, as a client sorting by ``created`` would pick it.
        return min(holders, key=lambda p: (p.created, p.id)).id if holders else None

    def lists_of(self, profile_id: str) -> list[KlaviyoList]:
        return [lst for lst in self.lists.values() if profile_id in lst.members]

    def segments_of(self, profile_id: str) -> list[Segment]:
        return [seg for seg in self.segments.values() if profile_id in seg.members]

    def search_view(self, profile: Profile) -> Profile | None:
        """The profile as filtered search sees it now; None while it is not indexed yet."""
        versions = self._search.get(profile.id)
        if not versions:
            return None
        now = self.timeline.clock()
        visible = [i for i, (since, _) in enumerate(versions) if since <= now]
        if not visible:
            return None
        for _, older in versions[: visible[-1]]:  # can no longer be seen
            self._search_index.remove(older)
        del versions[: visible[-1]]
        return versions[0][1]

    def search_candidates(self, conditions: list[Condition]) -> list[Profile] | None:
        """The profiles that may match a filter by exact ``id``/``email``/``phone_number``/
        ``external_id`` (a superset, from the search index); None when the filter has no
        such condition and every profile must be looked at."""
        ids = self._search_index.candidates(conditions, self._search)
        if ids is None:
            return None
        return [self.profiles[pid] for pid in ids if pid in self.profiles]

    def _forget_search(self, profile_id: str) -> None:
        for _, version in self._search.pop(profile_id, []):
            self._search_index.remove(version)

    def _changed(self, profile: Profile, *, seeded: bool = False) -> None:
        """A profile was written: reindex it for search and re-evaluate rule segments.

        Seeded profiles are searchable at once (they stand for data that was already
        there); segment membership always waits for ``segment_lag``.
        """
        lag = 0.0 if seeded else self.config.search_lag
        snapshot = profile.search_snapshot()
        if lag <= 0:
            self._forget_search(profile.id)
            self._search[profile.id] = [(-math.inf, snapshot)]
        else:
            now = self.timeline.now()
            self._search.setdefault(profile.id, []).append((now + lag, snapshot))
        self._search_index.add(snapshot)
        ruled = [s for s in self.segments.values() if s.predicate is not None]
        if ruled:
            attributes = profile_resource(profile, "", subscriptions=True)["attributes"]
            for segment in ruled:
                assert segment.predicate is not None
                self._segment_change(segment.id, profile.id, segment.predicate(attributes))

    def _segment_change(
        self, segment_id: str, profile_id: str, member: bool, joined_at: datetime | None = None
    ) -> None:
        def apply() -> None:
            segment = self.segments.get(segment_id)
            if segment is None:
                return
            if member and profile_id in self.profiles:
                segment.members.setdefault(profile_id, joined_at or self.now())
            elif not member:
                segment.members.pop(profile_id, None)

        self.timeline.after(self.config.segment_lag, apply)

    # ---- identity ------------------------------------------------------------------------

    def _conflict(self, attributes: dict[str, Any], own_id: str | None) -> str | None:
        """Id of another profile already holding this email/phone (or unique external_id)."""
        clash = self._conflicting_identifier(attributes, own_id)
        return clash[1] if clash else None

    def _conflicting_identifier(
        self, attributes: dict[str, Any], own_id: str | None
    ) -> tuple[str, str] | None:
        """``(attribute, holder id)`` of the first identifier in ``attributes`` another
        profile holds: email, phone_number, and external_id when ``external_id_unique``."""
        finders = {
            "email": self.find_by_email,
            "phone_number": self.find_by_phone,
            "external_id": self.find_by_external_id,
        }
        if not self.config.external_id_unique:
            del finders["external_id"]
        for name, find in finders.items():
            holder = find(attributes.get(name))
            if holder is not None and holder != own_id:
                return name, holder
        return None

    def _index(
        self,
        profile: Profile,
        before: Mapping[str, str | None] | None = None,
        *,
        present: bool = True,
    ) -> None:
        """Move the identifier index from the identifiers the profile had (``before``, from
        :func:`identifiers`) to its current ones (``present=False``: the profile is gone).

        Seeded duplicates may share an identifier; the oldest remaining holder then answers
        ``find_by_*``.
        """
        now = identifiers(profile) if present else dict.fromkeys(IDENTIFIERS)
        for name in IDENTIFIERS:
            old_key = _identifier_key(name, (before or {}).get(name))
            new_key = _identifier_key(name, now[name])
            if old_key == new_key:
                continue
            by_value = self._holders[name]
            if old_key is not None and old_key in by_value:
                by_value[old_key].pop(profile.id, None)
                if not by_value[old_key]:
                    del by_value[old_key]
            if new_key is not None:
                by_value.setdefault(new_key, {})[profile.id] = None

    # ---- profile writes ------------------------------------------------------------------

    def _new_profile(self, created: datetime | None, updated: datetime | None) -> Profile:
        now = self.now()
        created = created or now
        return Profile(id=self._ulids.new(), created=created, updated=updated or created)

    def seed_profile(
        self,
        attributes: dict[str, Any],
        *,
        created: str | datetime | None = None,
        updated: str | datetime | None = None,
        last_event_date: str | datetime | None = None,
    ) -> Profile:
        """Test seeding: no identity rules, so duplicates (and no identifier) are allowed."""
        cleaned = clean_attributes(attributes)
        with self.lock:
            profile = self._new_profile(
                parse_timestamp(created) if created else None,
                parse_timestamp(updated) if updated else None,
            )
            self._merge(profile, cleaned, {})
            if last_event_date is not None:
                profile.last_event_date = parse_timestamp(last_event_date)
            self.profiles[profile.id] = profile
            self._index(profile)
            self._changed(profile, seeded=True)
            return profile

    def check_create_identifiers(
        self, attributes: dict[str, Any], pointer: str = "/data/attributes"
    ) -> None:
        check_identifiers(attributes, pointer)
        if not self.config.sms_enabled and not any(
            attributes.get(k) for k in ("email", "external_id")
        ):
            # Without SMS set up a phone number is no identifier: "Error creating new
            # profiles with phone number only" (community.klaviyo.com thread 11955).
            raise invalid(NO_IDENTIFIER, pointer=pointer)

    def create_profile(self, attributes: dict[str, Any]) -> Profile:
        self.check_create_identifiers(attributes)
        with self.lock:
            existing = self._conflict(attributes, None)
            if existing is not None:
                raise duplicate_profile(existing)
            profile = self._new_profile(None, None)
            self._merge(profile, attributes, {})
            self.profiles[profile.id] = profile
            self._index(profile)
            self._changed(profile)
            return profile

    def update_profile(
        self, profile_id: str, attributes: dict[str, Any], meta: dict[str, Any]
    ) -> Profile:
        with self.lock:
            profile = self.profile(profile_id)
            return self._apply_update(profile, attributes, meta)

    def _apply_update(
        self, profile: Profile, attributes: dict[str, Any], meta: dict[str, Any]
    ) -> Profile:
        existing = self._conflict(attributes, profile.id)
        if existing is not None:
            raise duplicate_profile(existing)
        candidate = profile.clone()
        self._merge(candidate, attributes, meta)
        if not candidate.has_identifier():
            raise invalid(NO_IDENTIFIER, pointer="/data/attributes")
        self._write(profile, candidate)
        return profile

    def _write(self, profile: Profile, candidate: Profile) -> None:
        """Take ``candidate``'s data into ``profile`` and reindex it."""
        before = identifiers(profile)
        profile.attributes = candidate.attributes
        profile.location = candidate.location
        profile.properties = candidate.properties
        profile.updated = max(self.now(), profile.updated)
        self._index(profile, before)
        self._changed(profile)

    def _add_profile(self, attributes: dict[str, Any], meta: dict[str, Any]) -> Profile:
        profile = self._new_profile(None, None)
        self._merge(profile, attributes, meta)
        self.profiles[profile.id] = profile
        self._index(profile)
        self._changed(profile)
        return profile

    def bulk_import_profile(self, item: ImportItem, *, match_external_id: bool) -> Profile:
        """One profile of a bulk import job: by ``id``; else the profile holding the email,
        else the phone number (else the external_id with ``match_external_id``); else a new
        profile. Raises ApiError, pointing into the job's body, for an import error: what is
        decided while the job runs (an unknown id, an identifier another profile holds).
        Formats and identifiers were checked when the job was submitted (``bulk_import``)."""
        where = f"{IMPORT_PROFILES}/{item.index}"
        attributes_at = f"{where}/attributes"
        attributes = item.attributes
        with self.lock:
            target: Profile | None = None
            if item.profile_id is not None:
                target = self.profiles.get(item.profile_id)
                if target is None:
                    raise ApiError(
                        404,
                        "not_found",
                        "Not found.",
                        f"A profile with id {item.profile_id} does not exist.",
                        pointer=f"{where}/id",
                    )
            else:
                by_email = self.find_by_email(attributes.get("email"))
                by_phone = self.find_by_phone(attributes.get("phone_number"))
                if by_email and by_phone and by_email != by_phone:
                    raise duplicate_profile(by_phone, pointer=f"{attributes_at}/phone_number")
                found = by_email or by_phone
                if found is None and match_external_id:
                    found = self.find_by_external_id(attributes.get("external_id"))
                target = self.profiles[found] if found else None
            clash = self._conflicting_identifier(attributes, target.id if target else None)
            if clash is not None:
                raise duplicate_profile(clash[1], pointer=f"{attributes_at}/{clash[0]}")
            if target is None:
                return self._add_profile(attributes, item.meta)
            candidate = target.clone()
            self._merge(candidate, attributes, item.meta)
            self._write(target, candidate)
            return target

    def import_profile(
        self, profile_id: str | None, attributes: dict[str, Any], meta: dict[str, Any]
    ) -> tuple[Profile, bool]:
        """Upsert by id, else email, else phone, else external_id; True when created."""
        with self.lock:
            target: str | None
            if not profile_id:
                self.check_create_identifiers(attributes)
            if profile_id:
                target = self.profile(profile_id).id
            else:
                by_email = self.find_by_email(attributes.get("email"))
                by_phone = self.find_by_phone(attributes.get("phone_number"))
                if by_email and by_phone and by_email != by_phone:
                    raise duplicate_profile(by_phone)
                target = (
                    by_email or by_phone or self.find_by_external_id(attributes.get("external_id"))
                )
            if target is not None:
                return self._apply_update(self.profiles[target], attributes, meta), False
            return self._add_profile(attributes, meta), True

    @staticmethod
    def _merge(profile: Profile, attributes: dict[str, Any], meta: dict[str, Any]) -> None:
        """Omitted keys stay, null clears, location and properties merge key by key."""
        for key in STRING_ATTRIBUTES:
            if key in attributes:
                profile.attributes[key] = attributes[key]
        if "location" in attributes:
            location = attributes["location"]
            if location is None:
                profile.location = dict.fromkeys(LOCATION_FIELDS)
            else:
                profile.location.update(location)
        if "properties" in attributes:
            properties = attributes["properties"]
            if properties is None:
                profile.properties = {}
            else:
                profile.properties.update(properties)
        patch = meta.get("patch_properties") or {}
        for key, value in (patch.get("append") or {}).items():
            current = profile.properties.get(key)
            items = (
                list(current)
                if isinstance(current, list)
                else ([] if current is None else [current])
            )
            items.extend(value if isinstance(value, list) else [value])
            profile.properties[key] = items
        for key, value in (patch.get("unappend") or {}).items():
            current = profile.properties.get(key)
            if isinstance(current, list):
                drop = value if isinstance(value, list) else [value]
                profile.properties[key] = [item for item in current if item not in drop]
        unset = patch.get("unset")
        for key in [unset] if isinstance(unset, str) else unset or []:
            profile.properties.pop(key, None)

    # ---- lists and segments --------------------------------------------------------------

    def create_list(self, name: str, list_id: str | None = None, opt_in: str = "double") -> str:
        if opt_in not in OPT_IN_CHOICES:
            raise ValueError(f"opt_in must be one of {OPT_IN_CHOICES}")
        with self.lock:
            list_id = list_id or self._fresh_short_id()
            if list_id in self.lists:
                raise ValueError(f"list {list_id} already exists")
            now = self.now()
            self.lists[list_id] = KlaviyoList(list_id, name, opt_in, now, now)
            return list_id

    def create_segment(
        self,
        name: str,
        segment_id: str | None = None,
        definition: Definition | None = None,
        member_of_list: str | None = None,
    ) -> str:
        """A segment: seeded by hand, by a rule over profile data (``definition``), or
        defined as "is in list ``member_of_list``" (its members are that list's)."""
        if definition is not None and member_of_list is not None:
            raise ValueError("a segment takes a definition or member_of_list, not both")
        predicate = compile_definition(definition) if definition is not None else None
        with self.lock:
            source = self.klaviyo_list(member_of_list) if member_of_list is not None else None
            segment_id = segment_id or self._fresh_short_id()
            if segment_id in self.segments:
                raise ValueError(f"segment {segment_id} already exists")
            now = self.now()
            self.segments[segment_id] = Segment(
                segment_id, name, now, now, predicate=predicate, member_of_list=member_of_list
            )
            if predicate is not None:
                for profile in self.profiles.values():
                    attributes = profile_resource(profile, "", subscriptions=True)["attributes"]
                    if predicate(attributes):
                        self._segment_change(segment_id, profile.id, True)
            for profile_id in source.members if source is not None else ():
                self._segment_change(segment_id, profile_id, True)
            return segment_id

    def _fresh_short_id(self) -> str:
        while True:
            candidate = short_id(self._rng)
            if candidate not in self.lists and candidate not in self.segments:
                return candidate

    def add_to_segment(
        self, segment_id: str, profile_id: str, joined_at: str | datetime | None = None
    ) -> None:
        """Seed membership; like any membership change it shows after ``segment_lag``."""
        with self.lock:
            self.segment(segment_id)
            self.profile(profile_id)
            moment = parse_timestamp(joined_at) if joined_at else None
            self._segment_change(segment_id, profile_id, True, moment)

    def remove_from_segment(self, segment_id: str, profile_id: str) -> None:
        with self.lock:
            self.segment(segment_id)
            self._segment_change(segment_id, profile_id, False)

    def add_list_members(
        self, list_id: str, profile_ids: list[str], joined_at: str | datetime | None = None
    ) -> None:
        with self.lock:
            klaviyo_list = self.klaviyo_list(list_id)
            now = parse_timestamp(joined_at) if joined_at else None
            for profile_id in profile_ids:
                self._join_list(klaviyo_list, profile_id, now)

    def remove_list_members(self, list_id: str, profile_ids: list[str]) -> None:
        with self.lock:
            klaviyo_list = self.klaviyo_list(list_id)
            for profile_id in profile_ids:
                self._leave_list(klaviyo_list, profile_id)

    def _join_list(
        self, klaviyo_list: KlaviyoList, profile_id: str, joined_at: datetime | None = None
    ) -> None:
        """Every way onto a list comes here: the segments defined by the list follow."""
        if profile_id in klaviyo_list.members:
            return
        klaviyo_list.members[profile_id] = joined_at or self.now()
        for segment in self._segments_of_list(klaviyo_list.id):
            self._segment_change(segment.id, profile_id, True)

    def _leave_list(self, klaviyo_list: KlaviyoList, profile_id: str) -> None:
        if klaviyo_list.members.pop(profile_id, None) is None:
            return
        for segment in self._segments_of_list(klaviyo_list.id):
            self._segment_change(segment.id, profile_id, False)

    def _segments_of_list(self, list_id: str) -> list[Segment]:
        return [s for s in self.segments.values() if s.member_of_list == list_id]

    # ---- consent -------------------------------------------------------------------------

    def next_job_number(self) -> int:
        with self.lock:
            self._job_counter += 1
            return self._job_counter

    def suppress(self, profile_id: str, reason: str, list_id: str | None = None) -> None:
        """Seed an email suppression (what an unsubscribe or bounce would leave behind)."""
        if reason not in SUPPRESSION_REASONS:
            raise ValueError(f"reason must be one of {SUPPRESSION_REASONS}")
        with self.lock:
            profile = self.profile(profile_id)
            marketing = profile.subscriptions["email"]["marketing"]
            now = self.now().isoformat()
            if list_id is not None:
                entry = {"list_id": list_id, "reason": reason, "timestamp": now}
                marketing["list_suppressions"].append(entry)
            else:
                marketing["suppression"].append({"reason": reason, "timestamp": now})
                if reason == "UNSUBSCRIBE":
                    marketing["consent"] = UNSUBSCRIBED
                    marketing["last_updated"] = now
            marketing["can_receive_email_marketing"] = _can_receive_email(marketing)
            profile.updated = max(self.now(), profile.updated)
            self._changed(profile, seeded=True)

    def apply_subscribe_job(self, job: SubscribeJob) -> None:
        """Apply a validated job: find or create each profile, record consent, join the list."""
        with self.lock:
            opt_in = self.config.default_opt_in
            klaviyo_list = self.lists.get(job.list_id) if job.list_id else None
            if job.list_id and klaviyo_list is None:
                return  # deleted between validation and a delayed apply; Klaviyo drops it too
            if klaviyo_list is not None:
                opt_in = klaviyo_list.opt_in
            for item in job.profiles:
                profile = self._resolve_for_subscribe(item)
                joined = False
                for consent in item.consents:
                    if _kept_suppressed(profile, consent):
                        continue  # no consent, no confirmation: the job changes nothing here
                    double = (
                        opt_in == "double"
                        and not job.historical_import
                        and (consent.channel, consent.message_type) in DOUBLE_OPT_IN_CONSENTS
                    )
                    if double:
                        key = (profile.id, job.list_id or "")
                        self._pending.setdefault(key, []).append(_Pending(job, consent))
                        self.confirmations.append(
                            {
                                "profile_id": profile.id,
                                "list_id": job.list_id,
                                "channel": consent.channel,
                                "sent": self.now().isoformat(),
                            }
                        )
                        continue
                    self._grant(profile, job, consent, double_optin=False)
                    joined = True
                if joined and klaviyo_list is not None:
                    self._join_list(klaviyo_list, profile.id)
                self._changed(profile)

    def confirm_double_opt_in(
        self, profile_id: str, list_id: str | None, via: str | None = None
    ) -> None:
        """The person confirms: ``via`` "email" confirms email, "sms" confirms SMS and email,
        None everything pending for that profile and list."""
        if via is not None and via not in CONFIRMED_BY:
            raise ValueError(f"via must be one of {sorted(CONFIRMED_BY)} or None")
        with self.lock:
            key = (profile_id, list_id or "")
            pending = self._pending.get(key, [])
            channels = CONFIRMED_BY[via] if via is not None else None
            confirmed = [p for p in pending if channels is None or p.consent.channel in channels]
            if not confirmed:
                raise ValueError(f"no pending double opt-in for profile {profile_id} on {list_id}")
            self._pending[key] = [p for p in pending if p not in confirmed]
            if not self._pending[key]:
                del self._pending[key]
            profile = self.profile(profile_id)
            for item in confirmed:
                if not _kept_suppressed(profile, item.consent):
                    self._grant(profile, item.job, item.consent, double_optin=True)
            if list_id and list_id in self.lists:
                self._join_list(self.lists[list_id], profile_id)
            self._changed(profile)

    def apply_unsubscribe_job(self, job: UnsubscribeJob) -> None:
        """Apply a validated unsubscribe job (``bulk_unsubscribe_profiles``).

        Profiles no one holds are created, then unsubscribed (spec: "If a profile cannot be
        found matching the given identifier(s), a new profile will be created and then
        unsubscribed"). Email marketing becomes UNSUBSCRIBED with an ``UNSUBSCRIBE``
        suppression: for the given list only when the profile is a member of it and
        ``unsubscribe_scope`` is "list", otherwise account-wide ("Profiles not in the
        specified list will be globally unsubscribed"). Every profile leaves the list ("All
        profiles will be removed from the provided list"). Pending double opt-ins of the
        unsubscribed channels are dropped.
        """
        with self.lock:
            klaviyo_list = self.lists.get(job.list_id) if job.list_id else None
            for item in job.profiles:
                profile = self._resolve_for_subscribe(
                    ProfileSubscription(None, item.email, item.phone_number, [])
                )
                member = klaviyo_list is not None and profile.id in klaviyo_list.members
                scoped = member and self.config.unsubscribe_scope == "list"
                for channel, message_type in item.channels:
                    self._revoke(profile, channel, message_type, job.list_id if scoped else None)
                channels = {channel for channel, _ in item.channels}
                for key in [k for k in self._pending if k[0] == profile.id]:
                    kept = [p for p in self._pending[key] if p.consent.channel not in channels]
                    if kept:
                        self._pending[key] = kept
                    else:
                        del self._pending[key]
                if klaviyo_list is not None:
                    self._leave_list(klaviyo_list, profile.id)
                profile.updated = max(self.now(), profile.updated)
                self._changed(profile)

    def _revoke(
        self, profile: Profile, channel: str, message_type: str, list_id: str | None
    ) -> None:
        stamp = self.now().isoformat()
        subs = profile.subscriptions
        if (channel, message_type) == ("email", "marketing"):
            marketing = subs["email"]["marketing"]
            marketing.update(consent=UNSUBSCRIBED, consent_timestamp=stamp, last_updated=stamp)
            if list_id is not None:
                entries, entry = (
                    marketing["list_suppressions"],
                    {"list_id": list_id, "reason": "UNSUBSCRIBE", "timestamp": stamp},
                )
                held = any(
                    e["list_id"] == list_id and e["reason"] == "UNSUBSCRIBE" for e in entries
                )
            else:
                entries, entry = (
                    marketing["suppression"],
                    {"reason": "UNSUBSCRIBE", "timestamp": stamp},
                )
                held = any(e["reason"] == "UNSUBSCRIBE" for e in entries)
            if not held:
                entries.append(entry)
            marketing["can_receive_email_marketing"] = _can_receive_email(marketing)
        elif channel == "email":  # open_tracking
            subs["email"]["open_tracking"] = _revoked_block(stamp, None)
        elif channel == "sms":
            block = subs["sms"][message_type]
            block.update(consent=UNSUBSCRIBED, consent_timestamp=stamp, last_updated=stamp)
            block[f"can_receive_sms_{message_type}"] = False
        elif channel == "whatsapp":
            whatsapp = subs.setdefault("whatsapp", {})
            whatsapp[message_type] = _revoked_block(stamp, profile.phone_number)
        elif channel == "push":
            subs["mobile_push"]["marketing"].update(
                consent=UNSUBSCRIBED, consent_timestamp=stamp, can_receive_push_marketing=False
            )

    # ---- events --------------------------------------------------------------------------

    def event_profile(
        self,
        profile_id: str | None,
        attributes: dict[str, Any],
        meta: dict[str, Any],
        anonymous_id: str | None,
    ) -> Profile:
        """The profile an event belongs to, found by id, email, phone number, external_id or
        anonymous_id in that order, else created; the event's profile attributes are written
        to it, except identifiers another profile holds (they stay where they are)."""
        with self.lock:
            found = profile_id if profile_id in self.profiles else None
            found = (
                found
                or self.find_by_email(attributes.get("email"))
                or self.find_by_phone(attributes.get("phone_number"))
                or self.find_by_external_id(attributes.get("external_id"))
                or self._anonymous.get(anonymous_id or "")
            )
            target = self.profiles.get(found) if found else None
            own = target.id if target else None
            attributes = dict(attributes)
            while (clash := self._conflicting_identifier(attributes, own)) is not None:
                del attributes[clash[0]]
            if target is None:
                profile = self._add_profile(attributes, meta)
            else:
                candidate = target.clone()
                self._merge(candidate, attributes, meta)
                if candidate.has_identifier() or not target.has_identifier():
                    self._write(target, candidate)
                profile = target
            if anonymous_id:
                self._anonymous.setdefault(anonymous_id, profile.id)
            return profile

    def record_event(self, event: Event, unique_key: str) -> bool:
        """Store ``event`` unless one with the same metric, profile and unique key (its
        ``unique_id``, else its time to the second) is stored; True when stored."""
        key = (event.metric, event.profile_id, unique_key)
        with self.lock:
            if key in self._event_keys or event.profile_id not in self.profiles:
                return False
            self._event_keys.add(key)
            self.events.append(event)
            profile = self.profiles[event.profile_id]
            if profile.last_event_date is None or event.time > profile.last_event_date:
                profile.last_event_date = event.time
                self._changed(profile)
            return True

    # ---- deletion ------------------------------------------------------------------------

    def profiles_matching(self, kind: str, value: str) -> list[str]:
        """Ids of every profile with this ``id``, ``email`` or ``phone_number``."""
        if kind == "id":
            return [value] if value in self.profiles else []
        return self.holders(kind, value)

    def delete_profiles(self, kind: str, value: str) -> None:
        """A data-privacy deletion: "All profiles that match the provided identifier will be
        deleted" (spec, request_profile_deletion), with their list and segment memberships."""
        with self.lock:
            for profile_id in self.profiles_matching(kind, value):
                profile = self.profiles.pop(profile_id)
                self._forget_search(profile_id)
                self._index(profile, identifiers(profile), present=False)
                groups: list[KlaviyoList | Segment] = [
                    *self.lists.values(),
                    *self.segments.values(),
                ]
                for group in groups:
                    group.members.pop(profile_id, None)
                for key in [k for k in self._pending if k[0] == profile_id]:
                    del self._pending[key]
                if any(e.profile_id == profile_id for e in self.events):
                    self.events = [e for e in self.events if e.profile_id != profile_id]
                    self._event_keys = {k for k in self._event_keys if k[1] != profile_id}
                for anonymous_id in [a for a, p in self._anonymous.items() if p == profile_id]:
                    del self._anonymous[anonymous_id]

    def _resolve_for_subscribe(self, item: ProfileSubscription) -> Profile:
        found = (
            item.profile_id
            if item.profile_id in self.profiles
            else self.find_by_email(item.email) or self.find_by_phone(item.phone_number)
        )
        if found is None:
            profile = self._new_profile(None, None)
            self.profiles[profile.id] = profile
        else:
            profile = self.profiles[found]
        before = identifiers(profile)
        # Fill in missing identifiers, but never take one that another profile owns.
        if item.email and not profile.email and self.find_by_email(item.email) is None:
            profile.attributes["email"] = item.email
        if (
            item.phone_number
            and not profile.phone_number
            and self.find_by_phone(item.phone_number) is None
        ):
            profile.attributes["phone_number"] = item.phone_number
        self._index(profile, before)
        return profile

    def _grant(
        self, profile: Profile, job: SubscribeJob, consent: ChannelConsent, *, double_optin: bool
    ) -> None:
        now = self.now()
        stamp = (consent.consented_at or now).isoformat()
        subs = profile.subscriptions
        method_detail = str(job.job_number)
        if (consent.channel, consent.message_type) == ("email", "marketing"):
            marketing = subs["email"]["marketing"]
            marketing.update(
                consent=SUBSCRIBED,
                consent_timestamp=stamp,
                last_updated=now.isoformat(),
                method="API",
                method_detail=method_detail,
                custom_method_detail=job.custom_source,
                double_optin=double_optin,
            )
            marketing["suppression"] = [
                s for s in marketing["suppression"] if s["reason"] not in LIFTED_SUPPRESSIONS
            ]
            marketing["list_suppressions"] = [
                s
                for s in marketing["list_suppressions"]
                if not (s["list_id"] == job.list_id and s["reason"] in LIFTED_SUPPRESSIONS)
            ]
            marketing["can_receive_email_marketing"] = _can_receive_email(marketing)
        elif consent.channel == "email":  # open_tracking
            subs["email"]["open_tracking"] = _whatsapp_like(stamp, now, None)
        elif consent.channel == "sms":
            block = subs["sms"][consent.message_type]
            block.update(
                consent=SUBSCRIBED,
                consent_timestamp=stamp,
                last_updated=now.isoformat(),
                method="API",
                method_detail=method_detail,
            )
            block[f"can_receive_sms_{consent.message_type}"] = True
        elif consent.channel == "whatsapp":
            whatsapp = subs.setdefault("whatsapp", {})
            whatsapp[consent.message_type] = _whatsapp_like(stamp, now, profile.phone_number)
        elif consent.channel == "push":
            subs["mobile_push"]["marketing"].update(
                consent=SUBSCRIBED, consent_timestamp=stamp, can_receive_push_marketing=True
            )
        profile.updated = max(now, profile.updated)


def _revoked_block(stamp: str, phone: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "consent": UNSUBSCRIBED,
        "can_receive": False,
        "consent_timestamp": stamp,
        "last_updated": stamp,
        "created_timestamp": stamp,
        "metadata": None,
        "valid_until": None,
    }
    if phone is not None:
        block["phone_number"] = phone
    return block


def _kept_suppressed(profile: Profile, consent: ChannelConsent) -> bool:
    """Whether email marketing is asked for a profile whose suppression no job lifts."""
    if (consent.channel, consent.message_type) != ("email", "marketing"):
        return False
    suppression = profile.subscriptions["email"]["marketing"]["suppression"]
    return any(s["reason"] in KEPT_SUPPRESSIONS for s in suppression)


def _can_receive_email(marketing: dict[str, Any]) -> bool:
    return marketing["consent"] == SUBSCRIBED and not marketing["suppression"]


def _whatsapp_like(stamp: str, now: datetime, phone: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "consent": SUBSCRIBED,
        "can_receive": True,
        "consent_timestamp": stamp,
        "last_updated": now.isoformat(),
        "created_timestamp": now.isoformat(),
        "metadata": None,
        "valid_until": None,
    }
    if phone is not None:
        block["phone_number"] = phone
    return block

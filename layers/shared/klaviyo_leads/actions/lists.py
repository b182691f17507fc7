"""Add Profile to List and Remove Profile from List: list membership, one lead or 1,000
profile ids a call."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.action import Batch, Results
from klaviyo_leads.actions.batch import Member, chunks, resolve_ids, settle, split_rejected
from klaviyo_leads.actions.lookup import find_profile, klaviyo_list
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result, from_klaviyo_answer, success, unknown_target


def add_profile_to_list(ctx: Context, lead: Lead) -> Result:
    """Add a profile to a specific list in your Klaviyo account."""
    list_id = lead.list_id()
    if list_id is None:
        raise outcomes.LIST_ID_MISSING()
    group = klaviyo_list(ctx, list_id)
    ctx.client.check_pace("add_profiles_to_list", ctx.budget)
    # Found first even by Klaviyo Id: how Klaviyo answers a list add of an unknown id is not
    # documented (a 400, a 404 like an unknown list, or a 204 that adds nothing).
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    _change_membership(ctx, "POST", list_id, profile["id"])
    return success(list_name=group.name)


def _change_membership(ctx: Context, method: str, list_id: str, profile_id: str) -> None:
    """Add (POST) or remove (DELETE) one profile; a 400 that points at it: no such profile."""
    response = ctx.call(
        method,
        f"/api/lists/{list_id}/relationships/profiles",
        body={"data": [{"type": "profile", "id": profile_id}]},
        expect=(204,),
        handled=(400, 404),
    )
    if response.status == 404:
        raise unknown_target("list", 404, response.errors)
    if response.status == 400:
        if any((e.pointer or "").startswith("/data/") for e in response.errors):
            raise outcomes.NO_PROFILE(errors=response.errors)
        raise from_klaviyo_answer(400, response.errors)


def remove_profile_from_list(ctx: Context, lead: Lead) -> Result:
    """Remove a profile from a list. Its consent stays as it was: this is not an unsubscribe."""
    list_id = lead.list_id()
    if list_id is None:
        raise outcomes.LIST_ID_MISSING()
    group = klaviyo_list(ctx, list_id)
    ctx.client.check_pace("remove_profiles_from_list", ctx.budget)
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    membership = lookup.list_members(ctx, list_id, [profile])
    if profile["id"] in membership.problems:
        raise membership.problems[profile["id"]]
    if profile["id"] not in membership.members:
        return outcomes.NOT_IN_LIST(list_name=group.name)
    _change_membership(ctx, "DELETE", list_id, profile["id"])
    return success(list_name=group.name)


MAX_IDS_PER_LIST_CALL = 1000


_LIST_ITEM_POINTER = re.compile(r"^/data/(\d+)(?:/|$)")


def add_profile_to_list_batch(batch: Batch) -> None:
    _list_all(batch, "POST")


def remove_profile_from_list_batch(batch: Batch) -> None:
    _list_all(batch, "DELETE")


def _list_all(batch: Batch, method: str) -> None:
    """Add (POST) or remove (DELETE) list members: profiles found in bulk, 1,000 a call."""
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    by_list: dict[str, list[Member]] = defaultdict(list)
    for index, lead in leads.items():
        try:
            list_id = lead.list_id()
            if list_id is None:
                raise outcomes.LIST_ID_MISSING()
            member = Member.of(ctx, index, lead)
        except Result as problem:
            results[index] = problem
            continue
        by_list[list_id].append(member)

    for list_id, members in by_list.items():
        indexes = [m.index for m in members]
        try:
            name = klaviyo_list(ctx, list_id).name
        except Result as problem:
            settle(results, indexes, problem)
            continue
        # Klaviyo Ids are looked up too: how Klaviyo answers a list add of an unknown id is
        # not documented (a 400, a 404 like an unknown list, or a 204 that adds nothing).
        resolve_ids(ctx, members, results)
        found = [m for m in members if m.profile_id is not None]
        if method == "DELETE":
            try:
                membership = lookup.list_members(ctx, list_id, [m.profile or {} for m in found])
            except Result as problem:
                settle(results, [m.index for m in found], problem)
                continue
            for member in found:
                if member.profile_id in membership.problems:
                    results[member.index] = membership.problems[member.profile_id]
                elif member.profile_id not in membership.members:
                    results[member.index] = outcomes.NOT_IN_LIST(list_name=name)
            found = [m for m in found if results[m.index] is None]
        for chunk in chunks(_by_profile(found), MAX_IDS_PER_LIST_CALL):
            _send_list_change(ctx, method, list_id, name, chunk, results)


def _by_profile(members: list[Member]) -> list[tuple[list[int], str]]:
    """One entry per distinct profile: the leads it serves and its id."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for member in members:
        grouped[member.profile_id or ""].append(member.index)
    return [(indexes, profile_id) for profile_id, indexes in grouped.items()]


def _send_list_change(
    ctx: Context,
    method: str,
    list_id: str,
    name: str | None,
    chunk: list[tuple[list[int], str]],
    results: Results,
) -> None:
    indexes = [index for served, _ in chunk for index in served]
    try:
        response = ctx.call(
            method,
            f"/api/lists/{list_id}/relationships/profiles",
            body={"data": [{"type": "profile", "id": profile_id} for _, profile_id in chunk]},
            expect=(204,),
            handled=(400, 404),
        )
    except Result as problem:
        settle(results, indexes, problem)
        return
    if response.status == 204:
        settle(results, indexes, success(list_name=name))
        return
    if response.status == 404:
        settle(results, indexes, unknown_target("list", 404, response.errors))
        return

    def resend(ctx: Context, rest: list[Any], results: Results) -> None:
        _send_list_change(ctx, method, list_id, name, rest, results)

    # Klaviyo names unknown profile ids by their place in the call: no profile for those leads.
    split_rejected(
        ctx,
        chunk,
        response.errors,
        _LIST_ITEM_POINTER,
        results,
        resend,
        whole=lambda: from_klaviyo_answer(400, response.errors),
        served=lambda item: item[0],
        own=lambda errors: outcomes.NO_PROFILE(errors=errors),
    )

"""Get Profiles: whether a profile exists, found by the lead's identifier; a batch in
100-identifier searches."""

from __future__ import annotations

from klaviyo_leads import outcomes
from klaviyo_leads.actions import lookup
from klaviyo_leads.actions.action import Batch
from klaviyo_leads.actions.batch import Member, by_search
from klaviyo_leads.actions.lookup import find_profile
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result, success


def get_profiles(ctx: Context, lead: Lead) -> Result:
    """Identify if a profile exists in your Klaviyo account."""
    profile = find_profile(ctx, lead)
    if profile is None:
        raise outcomes.NO_PROFILE()
    return success(profile)


def get_profiles_batch(batch: Batch) -> None:
    ctx, leads, results = batch.ctx, batch.leads, batch.results
    members = []
    for index, lead in leads.items():
        try:
            members.append(Member.of(ctx, index, lead))
        except Result as problem:
            results[index] = problem
    for (identifier, sort), group in by_search(members).items():
        found = lookup.search(ctx, identifier, sort, [m.value for m in group])
        for member in group:
            value_key = lookup.key(identifier, member.value)
            profile = found.first(value_key)
            if value_key in found.problems:
                results[member.index] = found.problems[value_key]
            else:
                results[member.index] = success(profile) if profile else outcomes.NO_PROFILE()

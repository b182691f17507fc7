"""An action (its name, route, one-lead and batch paths, the fields its result appends) and a
batch of leads it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from klaviyo_leads.context import Context
from klaviyo_leads.lead import fields as fieldmap
from klaviyo_leads.lead.body import finite
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result, errors_field

Results = list[Result | None]


@dataclass(frozen=True)
class Delivery:
    """How a queued lead arrived: which delivery of its message this is (SQS's count)."""

    count: int = 1


@dataclass
class Batch:
    """The leads of one bulk call, their results, and the budget they share."""

    ctx: Context
    leads: dict[int, Lead]
    results: Results
    deliveries: list[Delivery]
    origins: list[str | None]  # what each lead arrived as (its SQS message id)
    action: Action  # whose one-lead path takes what the bulk call cannot

    def fail(self, index: int, problem: Result) -> None:
        self.results[index] = problem

    def lead_ctx(self, index: int) -> Context:
        """The batch's context as one of its leads sees it: its origin and delivery."""
        return replace(
            self.ctx, origin_id=self.origins[index], delivery=self.deliveries[index].count
        )

    def one_by_one(self, index: int) -> None:
        """Give a lead the one-lead path (a small batch, or what the bulk call cannot take)."""
        self.results[index] = run_action(self.action, self.lead_ctx(index), self.leads[index])


@dataclass(frozen=True)
class Action:
    name: str
    seed_name: str
    route: str
    run: Callable[[Context, Lead], Result]  # one lead
    # A queued batch in as few Klaviyo calls as it allows; None: one lead at a time.
    run_batch: Callable[[Batch], None] | None
    returns_profile: bool
    # Result attributes appended beyond outcome, reason, errors and the profile fields.
    appends: tuple[str, ...] = ()
    # The lead's own keys are the action's data (Track Event's event properties): only
    # unknown variables (``klaviyo.*``) are ignored.
    keeps_lead_keys: bool = False


def run_action(action: Action, ctx: Context, lead: Lead) -> Result:
    try:
        result = action.run(ctx, lead)
    except Result as stopped:
        result = stopped
    result.ignored_fields = ignored_fields(action, lead)
    return result


def ignored_fields(action: Action, lead: Lead) -> list[str]:
    """The lead's keys the action does not read (``keeps_lead_keys``: only its unknown
    variables, ``klaviyo.*``)."""
    keeps = action.keeps_lead_keys
    return [k for k in lead.ignored if not keeps or k.startswith("klaviyo.")]


def result_fields(action: Action, result: Result) -> dict[str, Any]:
    """The appended fields of contract section 5, flat, ``None`` where absent."""
    fields: dict[str, Any] = {"outcome": result.outcome.value, "reason": result.reason}
    if action.returns_profile:
        fields.update(fieldmap.profile_fields(result.profile, result.list_name))
        for channel, state in (result.consent or {}).items():
            fields[f"{channel}_consent"] = state  # what the subscribe came to, channel by channel
    for name in action.appends:
        fields[name] = getattr(result, name)
    fields["message_id"] = result.message_id
    fields["ignored_fields"] = result.ignored_fields
    fields["errors"] = errors_field(result.errors)
    return finite(fields)  # JSON has no NaN: a non-finite number Klaviyo echoes becomes null

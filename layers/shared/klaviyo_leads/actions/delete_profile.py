"""Delete Profile: a data-privacy deletion request for the lead's profile."""

from __future__ import annotations

from klaviyo_leads import outcomes
from klaviyo_leads.actions.lookup import profile_reference, require_search_value
from klaviyo_leads.context import Context
from klaviyo_leads.lead.record import Lead
from klaviyo_leads.outcomes import Result

# What a data-privacy deletion job takes: one of these, and only one.
_DELETABLE_BY = {"email": "email", "phone_number": "phone_number", "klaviyo_id": "id"}


def delete_profile(ctx: Context, lead: Lead) -> Result:
    """Request the deletion of a profile and its data (Klaviyo does it asynchronously)."""
    if not ctx.settings.profile_deletion_enabled:
        raise outcomes.DELETION_OFF()
    identifier, value = deletion_identifier(ctx, lead)
    profile = profile_reference(identifier, value)
    ctx.call(
        "POST",
        "/api/data-privacy-deletion-jobs",
        body={
            "data": {
                "type": "data-privacy-deletion-job",
                "attributes": {"profile": {"data": profile}},
            }
        },
        expect=(202,),
    )
    return outcomes.DELETION_REQUESTED()


def deletion_identifier(ctx: Context, lead: Lead) -> tuple[str, str]:
    """The one identifier to delete by: the configured one, else the only one the lead has."""
    if "klaviyo.identifier" in lead:
        identifier, value = require_search_value(ctx, lead)
        if identifier not in _DELETABLE_BY:
            raise outcomes.NOT_DELETABLE_BY(identifier="external id")
        return identifier, value
    present = [
        name
        for name, key in (
            ("klaviyo_id", "klaviyo.id"),
            ("email", "email"),
            ("phone_number", "phone_1"),
        )
        if key in lead
    ]
    if len(present) > 1:
        raise outcomes.ONE_IDENTIFIER_ONLY()
    if not present:
        if lead.external_id():
            raise outcomes.NOT_DELETABLE_BY(identifier="external id")
        raise outcomes.NO_IDENTIFIER()
    return require_search_value(ctx, lead)

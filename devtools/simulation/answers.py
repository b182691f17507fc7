"""What a lead's answer means to its caller: whether it ends the lead or asks for another try."""

from __future__ import annotations

import functools
import re
from typing import Any

from klaviyo_leads.outcomes import RETRYABLE_STATUSES, Kind, every_reason

_STATUS = re.compile(r"\(HTTP (\d{3})\)")


def final(answer: dict[str, Any]) -> bool:
    """Whether an answer ends the lead: a result that is not to be tried again."""
    if answer.get("_status") in (0, 409, 429) or not answer.get("outcome"):
        return False
    return not retryable(str(answer.get("reason") or ""))


@functools.cache
def _patterns() -> list[tuple[re.Pattern[str], bool]]:
    patterns = []
    for reason in every_reason().values():
        text = re.sub(r"\\\{\w+\\\}", ".*", re.escape(reason.text))
        again = reason.retryable or reason.kind is Kind.QUEUED
        patterns.append((re.compile(f"^{text}$"), again))
    return patterns


def retryable(reason: str) -> bool:
    """Whether a result's reason is one the bundle gives a lead to try again. Two reasons
    share a text and differ by Klaviyo's status (an unreadable answer): the status decides."""
    verdicts = {again for pattern, again in _patterns() if pattern.match(reason)}
    if len(verdicts) > 1:
        status = _STATUS.search(reason)
        return bool(status) and int(status.group(1)) in RETRYABLE_STATUSES
    return verdicts == {True}

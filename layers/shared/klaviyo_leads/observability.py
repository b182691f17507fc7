"""What the functions tell operators: the logger, the metrics and their per-invocation counts,
and the log levels of the libraries under them."""

from __future__ import annotations

import logging
from collections import defaultdict

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from klaviyo_leads.outcomes import Outcome
from klaviyo_leads.trail import records as trail

# At DEBUG, botocore writes whole responses (the Klaviyo key, as Secrets Manager returns it,
# and stored results) and urllib3 every URL (Klaviyo's filters carry the lead's email and phone).
QUIET_LIBRARIES = ("boto3", "botocore", "s3transfer", "urllib3")


def quiet_libraries() -> None:
    """The AWS SDK and the HTTP library log warnings and errors only, whatever the log level
    of the functions (``LogLevel``) or of the root logger."""
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(max(logging.WARNING, library.level))


SERVICE = "klaviyo-lead-actions"


NAMESPACE = "KlaviyoLeadActions"


logger = Logger(service=SERVICE)


metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


_OUTCOME_METRIC = {
    Outcome.SUCCESS: "LeadSucceeded",
    Outcome.FAILURE: "LeadFailed",
    Outcome.ERROR: "LeadErrored",
}


# Counted per invocation and written as one data point each: a batch of 1000 leads makes
# thousands of calls, and one EMF value per call would flood the logs.
_counts: dict[str, float] = defaultdict(float)  # counts, and seconds for *Seconds metrics


def count_klaviyo_call(bucket: str, status: int | None, seconds: float = 0.0) -> None:
    _counts["KlaviyoCalls"] += 1
    if status == 429:
        _counts["KlaviyoThrottled"] += 1
    trail.observe(bucket, status, seconds)


def count_pacer_wait(bucket: str, seconds: float) -> None:
    _counts["PacerWaitSeconds"] += seconds


def count(name: str, value: float = 1) -> None:
    _counts[name] += value


def flush_counts() -> None:
    """Hand this invocation's counts to Powertools Metrics (before it writes them)."""
    for name, value in sorted(_counts.items()):
        unit = MetricUnit.Seconds if name.endswith("Seconds") else MetricUnit.Count
        metrics.add_metric(name=name, unit=unit, value=value)
    _counts.clear()


def count_outcome(outcome: Outcome) -> None:
    _counts[_OUTCOME_METRIC[outcome]] += 1

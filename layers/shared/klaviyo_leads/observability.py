"""The log levels of the libraries under the functions."""

from __future__ import annotations

import logging

# At DEBUG, botocore writes whole responses (the Klaviyo key, as Secrets Manager returns it,
# and stored results) and urllib3 every URL (Klaviyo's filters carry the lead's email and phone).
QUIET_LIBRARIES = ("boto3", "botocore", "s3transfer", "urllib3")


def quiet_libraries() -> None:
    """The AWS SDK and the HTTP library log warnings and errors only, whatever the log level
    of the functions (``LogLevel``) or of the root logger."""
    for name in QUIET_LIBRARIES:
        library = logging.getLogger(name)
        library.setLevel(max(logging.WARNING, library.level))

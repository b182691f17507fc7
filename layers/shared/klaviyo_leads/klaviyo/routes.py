"""The route table: which Klaviyo operation a request is (as Klaviyo's OpenAPI document names
it), and each operation's burst limit. Klaviyo counts its limits per operation."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Klaviyo counts its limits per endpoint (operation). The client paces each operation on its
# own, named as Klaviyo's OpenAPI document names it; the route table below finds it.
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("GET", r"/api/profiles", "get_profiles"),
    ("POST", r"/api/profiles", "create_profile"),
    ("GET", r"/api/profiles/[^/]+", "get_profile"),
    ("PATCH", r"/api/profiles/[^/]+", "update_profile"),
    ("POST", r"/api/profile-subscription-bulk-create-jobs", "bulk_subscribe_profiles"),
    ("POST", r"/api/profile-subscription-bulk-delete-jobs", "bulk_unsubscribe_profiles"),
    ("POST", r"/api/profile-bulk-import-jobs", "bulk_import_profiles"),
    ("GET", r"/api/profile-bulk-import-jobs", "get_bulk_import_profiles_jobs"),
    ("GET", r"/api/profile-bulk-import-jobs/[^/]+", "get_bulk_import_profiles_job"),
    (
        "GET",
        r"/api/profile-bulk-import-jobs/[^/]+/profiles",
        "get_profiles_for_bulk_import_profiles_job",
    ),
    (
        "GET",
        r"/api/profile-bulk-import-jobs/[^/]+/import-errors",
        "get_errors_for_bulk_import_profiles_job",
    ),
    ("GET", r"/api/lists/[^/]+", "get_list"),
    ("GET", r"/api/lists/[^/]+/profiles", "get_profiles_for_list"),
    ("POST", r"/api/lists/[^/]+/relationships/profiles", "add_profiles_to_list"),
    ("DELETE", r"/api/lists/[^/]+/relationships/profiles", "remove_profiles_from_list"),
    ("GET", r"/api/segments/[^/]+", "get_segment"),
    ("GET", r"/api/segments/[^/]+/profiles", "get_profiles_for_segment"),
    ("POST", r"/api/events", "create_event"),
    ("POST", r"/api/event-bulk-create-jobs", "bulk_create_events"),
    ("POST", r"/api/data-privacy-deletion-jobs", "request_profile_deletion"),
)


_ROUTES = [(method, re.compile(f"^{path}/?$"), name) for method, path, name in OPERATIONS]


# Klaviyo's per-second (burst) limits by operation (the document's x-klaviyo-ratelimit). No
# header reports the burst window, so calls are spaced to stay inside it.
BURST_PER_SECOND = {
    "add_profiles_to_list": 10,
    "remove_profiles_from_list": 10,
    "bulk_import_profiles": 10,
    "get_bulk_import_profiles_jobs": 10,
    "get_bulk_import_profiles_job": 10,
    "get_profiles_for_bulk_import_profiles_job": 10,
    "get_errors_for_bulk_import_profiles_job": 10,
    "bulk_create_events": 10,
    "request_profile_deletion": 3,
    "create_event": 350,
}


DEFAULT_BURST_PER_SECOND = 75  # the "L" tier most profile, list and segment reads use


def operation_of(method: str, path_or_url: str) -> str:
    """The Klaviyo operation a request is, for pacing: by method and path."""
    path = urlsplit(path_or_url).path
    for route_method, pattern, name in _ROUTES:
        if route_method == method.upper() and pattern.match(path):
            return name
    return f"{method.upper()} {path}"

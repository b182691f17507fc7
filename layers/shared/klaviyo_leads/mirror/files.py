"""Which uploads are mirror files: those under ``mirror/<list_id>/``, and Add Profile to List
files whose metadata says ``mirror: true``. The lead-file splitter asks, and leaves them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from klaviyo_leads.lead_files.bucket import DRY_RUN_PREFIX

PREFIX = "mirror/"
ADD_TO_LIST = "add_profile_to_list/"
SETTING = "mirror"  # metadata of an Add Profile to List file: mirror its list
CONFIRM = "mirror-confirm-removals"
_TRUE = {"true", "yes", "1", "on"}


def is_mirror_key(key: str) -> bool:
    return key.removeprefix(DRY_RUN_PREFIX).startswith(PREFIX)


def wanted(key: str, metadata: Mapping[str, str]) -> bool:
    """Whether an uploaded object is a mirror file: by its prefix, or an Add Profile to List
    file with the mirror setting."""
    if is_mirror_key(key):
        return True
    setting = str(lowered(metadata).get(SETTING, "")).strip().lower()
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


def lowered(metadata: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): v for k, v in metadata.items()}

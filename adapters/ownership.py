"""Who owns an adapter and who may see it, read from the adapter folder's manifest.

The registry writes `lorafleet-manifest.json` (or `manifest.json`) next to the
weights with at least `owner` (a tenant name) and `visibility` (`public` or
`private`). A flat folder without a manifest (the demo's, an operator's copy) is
public and has no owner. A manifest that is present but unreadable or malformed
makes the adapter private to admins and unservable, so a broken write can never
publish someone's private adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAMES = ("lorafleet-manifest.json", "manifest.json")
MAX_MANIFEST_BYTES = 64 * 1024
VISIBILITIES = ("public", "private")


@dataclass(frozen=True)
class Ownership:
    owner: str | None = None
    visibility: str = "public"


def read_ownership(folder: Path) -> tuple[Ownership, str | None]:
    """The folder's ownership, and the reason it is unusable (None when fine)."""
    path = next((folder / n for n in MANIFEST_NAMES if (folder / n).is_file()), None)
    if path is None:
        return Ownership(), None
    hidden = Ownership(None, "private")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return hidden, f"{path.name} is larger than {MAX_MANIFEST_BYTES} bytes"
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return hidden, f"{path.name} is not valid JSON: {err}"
    if not isinstance(data, dict):
        return hidden, f"{path.name} must be a JSON object"
    owner = data.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        return hidden, f"{path.name}: owner must be a non-empty string"
    visibility = data.get("visibility", "public")
    if visibility not in VISIBILITIES:
        return Ownership(owner, "private"), f"{path.name}: visibility must be one of {', '.join(VISIBILITIES)}, got {visibility!r}"
    return Ownership(owner, visibility), None

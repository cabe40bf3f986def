"""Reading YAML config files and reporting pydantic errors by field path.

One way for every file a user writes (the serving config, a training config, the API
keys file), so a mistake reads the same everywhere: the file named, then each bad
field path with pydantic's message.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError


def field_problems(err: ValidationError) -> list[str]:
    """`path.to.field: message` for each error, `(root)` for the document itself."""
    return [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()]


def read_yaml(path: Path, error: type[Exception], what: str) -> object:
    """The file's YAML (JSON is YAML too), or `error` saying it is missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise error(f"{what} {path} is not valid YAML: {err}") from None

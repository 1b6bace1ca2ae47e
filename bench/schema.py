"""The base of every config model (unknown keys are errors that suggest the key meant), and the
value types for paths and Hub names that every config section shares."""
from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = sorted(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key {key}{hint} Allowed keys: {allowed}",
                        {
                            "key": repr(str(key)),
                            "raw": key,
                            "hint": hint or ".",
                            "allowed": ", ".join(allowed),
                        },
                    )
        return data


# -- shared value types: hostile strings are refused where they enter, with the key named ------

MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX: one path segment


def _local_path(v: str) -> str:
    for seg in v.split("/"):
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise ValueError(
                f"a path segment is longer than {MAX_NAME_BYTES} bytes ({seg[:40]}...)"
            )
    return v


# A path on this machine: bounded like the kernel bounds it, so a bad one fails here and not as
# an OSError deep inside a run. (NUL and other control characters are refused for every string
# in bench.config, before any model sees them.)
LocalPath = Annotated[
    str, Field(min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(_local_path)
]


def relative_file(v: str) -> str:
    """A file inside a repository or package: relative, '/'-separated, no '.' or '..' segment,
    so joining it to its root can never leave the root."""
    if len(v) > 1000:
        raise ValueError("a file name inside a repository or package is at most 1000 characters")
    if v.startswith("/") or "\\" in v:
        raise ValueError(
            f"{v!r} must be a relative path with '/' separators inside the repository or package"
        )
    segs = v.split("/")
    if any(s in ("", ".", "..") for s in segs):
        raise ValueError(f"{v!r} must not have empty, '.' or '..' segments")
    if any(len(s.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for s in segs):
        raise ValueError(f"a segment of {v[:60]!r} is longer than {MAX_NAME_BYTES} bytes")
    return v


RelativeFile = Annotated[str, AfterValidator(relative_file)]

# Hugging Face's own rule for repository ids (huggingface_hub.utils.validate_repo_id): letters,
# digits, '-', '_', '.'; no '--' or '..'; neither end is '-' or '.'; at most 96 characters.
_HUB_PART = re.compile(r"^[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?$")


def hub_repo(v: str) -> str:
    parts = v.split("/")
    if (
        len(parts) != 2
        or not all(_HUB_PART.match(p) for p in parts)
        or ".." in v
        or "--" in v
    ):
        raise ValueError(
            f"{v[:120]!r} is not a Hugging Face repository id 'owner/name' (letters, digits, "
            "'-', '_' and '.', no '..' or '--', at most 96 characters each side)"
        )
    return v


HubRepo = Annotated[str, AfterValidator(hub_repo)]


def hub_revision(v: str) -> str:
    # git's own rule for ref names forbids '..' anywhere, and empty segments.
    if not re.fullmatch(r"[\w./-]{1,200}", v) or ".." in v or any(
        s in ("", ".") for s in v.split("/")
    ):
        raise ValueError(
            f"{v[:120]!r} is not a branch, tag or commit (letters, digits, '_', '-', '.' and "
            "'/' between names, no '..')"
        )
    return v


HubRevision = Annotated[str, AfterValidator(hub_revision)]

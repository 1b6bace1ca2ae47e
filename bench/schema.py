"""The base of every config model: unknown keys are errors that suggest the key meant."""
from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
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

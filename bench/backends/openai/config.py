"""Settings of the HTTP backends as one cell sees them: the validated config model (whose
defaults, declared in bench.backends.http_settings, are the only ones) and the cell's swept
values (label, endpoint, server arguments, Ollama options), as one typed frozen object."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from bench.backends.base import BackendError
from bench.backends.http_settings import OllamaSettings, OpenAISettings

Scalar = bool | int | float | str
HttpSpec = OpenAISettings | OllamaSettings

# Keys of a cell's flat values that are not fields of the config model.
_RUN_KEYS = ("log_dir", "option_names")


@dataclass(frozen=True)
class HttpCell:
    """One cell's settings for an HTTP backend. Read swept values from here (label, endpoint,
    server_args, options), everything else from `spec`."""

    spec: HttpSpec
    label: str
    endpoint: str | None = None  # openai: "completions" or "chat"
    server_args: Mapping[str, Scalar] = field(default_factory=dict)
    options: Mapping[str, Scalar] = field(default_factory=dict)  # ollama's model options
    log_dir: str | None = None  # where a server bench starts writes its log (the run folder)

    @classmethod
    def from_values(cls, spec_type: type[HttpSpec], name: str,
                    values: Mapping[str, Any]) -> HttpCell:
        """Validate a cell's flat values (its swept settings + the backend's fixed ones, as
        `Cell.setting` and `Cell.extra` hold them) through the backend's config model."""
        fields = set(spec_type.model_fields)
        option_names = list(values.get("option_names") or [])
        options = {k: values[k] for k in option_names if k in values}
        rest = {k: v for k, v in values.items() if k not in _RUN_KEYS and k not in options}
        data = {k: v for k, v in rest.items() if k in fields and v is not None}
        server_args = {k: v for k, v in rest.items() if k not in fields}
        if data.get("server"):
            data["server"] = {**dict(data["server"]), "args": {k: [v] for k, v in
                                                               server_args.items()}}
        elif server_args:
            raise BackendError(
                f"the {name} backend has no setting {min(server_args)!r}"
            )
        if "endpoint" in data:
            data["endpoint"] = [data["endpoint"]]
        if options:
            data["options"] = {k: [v] for k, v in options.items()}
        try:
            spec = spec_type.model_validate({**data, "name": name})
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            where = ".".join(str(x) for x in err["loc"])
            raise BackendError(f"{name} settings: {where}: {err['msg']}") from None
        endpoint = values.get("endpoint")
        return cls(
            spec=spec,
            label=str(values.get("label") or name),
            endpoint=str(endpoint) if endpoint is not None else None,
            server_args=server_args,
            options=options,
            log_dir=str(values["log_dir"]) if values.get("log_dir") else None,
        )

    def updated(self, values: Mapping[str, Any]) -> HttpCell:
        """This cell's settings with some swept values changed (what `configure` may change)."""
        known = {k: values[k] for k in ("label", "endpoint") if k in values}
        args = {k: v for k, v in values.items() if k not in known and k in self.server_args}
        opts = {k: v for k, v in values.items() if k in self.options}
        return replace(self, **known, server_args={**self.server_args, **args},
                       options={**self.options, **opts})

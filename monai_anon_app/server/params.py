"""Infer-task options: their schema (shown in ``GET /info/``) and strict parsing of a request's ``params``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monai_anon_app.server.request_errors import RequestError

__all__ = ["IGNORED_KEYS", "MAX_SEED", "Option", "parse_options", "parse_params_json"]

MAX_SEED = 2**31 - 1
# keys that MONAI Label clients add on their own; accepted and ignored
IGNORED_KEYS = frozenset({"client_id", "device", "label_tag", "save_label", "timeout", "model", "image", "session",
                          "description", "logging", "result_extension", "result_dtype", "result_compress"})


@dataclass(frozen=True)
class Option:
    """One option of an infer task: ``kind`` is ``int``, ``bool`` or ``str``; ``None`` allowed when ``nullable``."""

    name: str
    kind: type
    default: Any
    help: str
    choices: Sequence[str] | None = None
    minimum: int | None = None
    maximum: int | None = None
    nullable: bool = False

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for ``/info``."""
        d: dict[str, Any] = {"type": self.kind.__name__, "default": self.default, "help": self.help}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        if self.minimum is not None:
            d["minimum"] = self.minimum
        if self.maximum is not None:
            d["maximum"] = self.maximum
        if self.nullable:
            d["nullable"] = True
        return d

    def parse(self, value: Any) -> Any:
        """``value`` checked against the schema; :class:`RequestError` (422) naming the option otherwise."""
        if value is None:
            if self.nullable:
                return None
            raise RequestError(422, f"option {self.name!r} must not be null")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise RequestError(422, f"option {self.name!r} must be true or false, not {value!r}")
            return value
        if self.kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RequestError(422, f"option {self.name!r} must be an integer, not {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise RequestError(422, f"option {self.name!r} must be at least {self.minimum}, not {value}")
            if self.maximum is not None and value > self.maximum:
                raise RequestError(422, f"option {self.name!r} must be at most {self.maximum}, not {value}")
            return value
        if not isinstance(value, str) or not value.strip():
            raise RequestError(422, f"option {self.name!r} must be a non-empty string, not {value!r}")
        if self.choices is not None and value not in self.choices:
            raise RequestError(422, f"option {self.name!r} must be one of {', '.join(self.choices)}, not {value!r}")
        return value


def parse_params_json(text: str | bytes | None) -> dict[str, Any]:
    """The ``params`` form field as a dict; :class:`RequestError` (422) when it is not a JSON object."""
    if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
        return {}
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        msg = getattr(exc, "msg", exc.__class__.__name__)
        raise RequestError(422, f"params is not valid JSON ({msg})") from None
    if not isinstance(value, dict):
        raise RequestError(422, f"params must be a JSON object, not {type(value).__name__}")
    return value


def parse_options(options: Sequence[Option], params: Mapping[str, Any]) -> dict[str, Any]:
    """Every option's value from ``params`` (defaults filled in); unknown keys are refused (422)."""
    known = {o.name: o for o in options}
    unknown = sorted(k for k in params if k not in known and k not in IGNORED_KEYS)
    if unknown:
        names = ", ".join(known) or "none"
        raise RequestError(422, f"unknown option(s) {', '.join(map(repr, unknown))}; this task takes {names}")
    return {name: (opt.parse(params[name]) if name in params else opt.default) for name, opt in known.items()}

"""One way to store a config: every configuration dataclass of the course derives from :class:`JSONConfig`.

``to_dict`` gives a JSON-safe dict (for the manifest and the trainer's resume check); ``from_dict`` rebuilds the
config from it, reviving nested config dataclasses (``PrimerConfig.unet``, ``InflatedVideoConfig.stages``) and the
tuples that JSON turned into lists, so a config read back compares equal to the one that was written.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def _revive(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return tp.from_dict(value) if issubclass(tp, JSONConfig) else tp(**value)
    if typing.get_origin(tp) is tuple and isinstance(value, (list, tuple)):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) == 1:
            return tuple(_revive(args[0], v) for v in value)
        if len(args) == len(value):
            return tuple(_revive(a, v) for a, v in zip(args, value))
        return tuple(value)
    return tuple(value) if isinstance(value, list) else value


class JSONConfig:
    """Mixin for config dataclasses: ``to_dict`` / ``from_dict`` (see the module doc)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        hints = typing.get_type_hints(cls)
        return cls(**{k: _revive(hints.get(k), v) for k, v in d.items()})

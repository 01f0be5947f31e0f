"""What a score depends on (`Fingerprint`) and how it was computed (`Recorded`): the engine states both, the
baseline stores them, and a check refuses to compare scores whose fingerprints differ. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def show(v: object, width: int = 40) -> str:
    """A fingerprint value as messages print it (long hashes shortened)."""
    if v is None:
        return "none"
    s = str(v)
    return s if len(s) <= width else s[:12] + "…" + s[-6:]


@dataclass(frozen=True)
class Fingerprint:
    """What the scores depend on. Two baselines are comparable only when every field is equal.

    Hashes (model_hash, adapter, probe_set, chat_template) are strings chosen by the caller; None means "not
    applicable / unknown" and compares equal only to None.
    """

    model: str
    model_revision: str | None = None
    model_hash: str | None = None
    adapter: str | None = None
    proxy: str | None = None
    probe_set: str | None = None
    params: str | None = None
    max_length: int | None = None
    chat_template: str | None = None
    loss_reduction: str | None = None
    normalize: str | bool | None = None

    def differences(self, other: Fingerprint) -> list[str]:
        """Human-readable differences, ``"field: mine → other"``, in field order; [] when comparable."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {show(a)} → {show(b)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        """The fingerprint a document records (a baseline's `fingerprint` object). A key that is no field is a
        `ValueError`: dropping it would compare two fingerprints as equal that are not."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown fingerprint field(s): {', '.join(unknown)}")
        values: dict[str, Any] = {name: d.get(name) for name in names}
        return cls(**values)


@dataclass(frozen=True)
class Recorded:
    """How the scores were computed. Informational only: differences never make scores incomparable (a bf16 GPU
    baseline serves a float32 CPU check). `extra` holds further scalar facts worth recording (no timestamps)."""

    method: str | None = None
    dtype: str | None = None
    device: str | None = None
    extra: dict[str, str | int | float | bool | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "method": self.method, "dtype": self.dtype, "device": self.device}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recorded:
        extra = {k: v for k, v in d.items() if k not in ("method", "dtype", "device")}
        return cls(method=d.get("method"), dtype=d.get("dtype"), device=d.get("device"), extra=extra)

    def differences(self, other: Recorded) -> list[str]:
        """Like `Fingerprint.differences`, for warnings ("scores recorded in bfloat16 on cuda")."""
        out = []
        for name in ("method", "dtype", "device"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{name}: {show(a)} → {show(b)}")
        return out


__all__ = ["Fingerprint", "Recorded", "show"]

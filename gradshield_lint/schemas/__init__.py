"""The JSON Schemas gradshield-lint ships: the configuration (`config`, where every default lives), the baseline file
(`baseline`), the JSON report (`report`) and one record of the probe format (`probes`).

Torch-free and cheap: the settings dataclasses of every stage take their defaults from `config_default`, so the
schema file is the one place a default is written.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """The file of schema `name` (config, baseline, report, probes)."""
    return FOLDER / f"{name}.schema.json"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Schema `name` as a document (cached: do not modify it)."""
    with schema_path(name).open(encoding="utf-8") as fh:
        result: dict[str, Any] = json.load(fh)
    return result


def config_node(*keys: str) -> dict[str, Any]:
    """The configuration schema's node for the key at `keys` (e.g. `"scoring", "method"`)."""
    node = load_schema("config")
    for key in keys:
        node = node["properties"][key]
    return node


def config_default(*keys: str) -> Any:
    """The configuration schema's default for the key at `keys`."""
    return config_node(*keys)["default"]


def config_enum(*keys: str) -> tuple[str, ...]:
    """The choices the configuration schema allows for the key at `keys`."""
    return tuple(config_node(*keys)["enum"])


__all__ = ["FOLDER", "config_default", "config_enum", "config_node", "load_schema", "schema_path"]

"""Alert definitions: a TOML or JSON file, checked field by field."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mailflow.alerts.issuing import AlertSpec
from mailflow.core.errors import InvalidInput
from mailflow.core.files import read_text_file


def read_alert_file(path: Path) -> AlertSpec:
    text = read_text_file(path)
    data: Any
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                str(path), f"not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from exc
    elif path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(str(path), f"not valid TOML: {exc}") from exc
    else:
        raise InvalidInput(str(path), "give a .toml or .json file")
    return parse_alert_spec(data, source=str(path))


def parse_alert_spec(data: Any, *, source: str) -> AlertSpec:
    if not isinstance(data, dict):
        raise InvalidInput(source, "expected a table of fields at the top level")
    try:
        return AlertSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"]
        if first["type"] == "missing":
            message = "this field is required"
        elif first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "string_pattern_mismatch" and field == "reference":
            message = "expected a reference like CC-4720"
        raise InvalidInput(f"{source}: field {field}", message) from exc

"""Alert definitions and alert updates: a TOML or JSON file, checked field
by field."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mailflow.alerts.issuing import AlertSpec
from mailflow.alerts.updates import UpdateSpec
from mailflow.core.errors import InvalidInput
from mailflow.core.files import read_text_file

Spec = TypeVar("Spec", bound=BaseModel)

# An update is a few paragraphs; a file far longer is a mistake, and is
# refused before it is parsed.
MAX_UPDATE_FILE_BYTES = 256 * 1024


def read_alert_file(path: Path) -> AlertSpec:
    return parse_alert_spec(_read_data(path), source=str(path))


def read_update_file(path: Path) -> UpdateSpec:
    """An update (`mailflow alert update`): summary, remediation, cves,
    answer_again, deadline_hours."""
    data = _read_data(path, max_bytes=MAX_UPDATE_FILE_BYTES)
    return parse_update_spec(data, source=str(path))


def _read_data(path: Path, *, max_bytes: int | None = None) -> Any:
    text = read_text_file(path, max_bytes=max_bytes)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                str(path), f"not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from exc
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(str(path), f"not valid TOML: {exc}") from exc
    raise InvalidInput(str(path), "give a .toml or .json file")


def parse_alert_spec(data: Any, *, source: str) -> AlertSpec:
    return _validated(AlertSpec, data, source=source)


def parse_update_spec(data: Any, *, source: str) -> UpdateSpec:
    return _validated(UpdateSpec, data, source=source)


def _validated(model: type[Spec], data: Any, *, source: str) -> Spec:
    if not isinstance(data, dict):
        raise InvalidInput(source, "expected a table of fields at the top level")
    try:
        return model.model_validate(data)
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

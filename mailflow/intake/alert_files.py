"""Alert definitions: a TOML or JSON file, checked field by field."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from mailflow.domain.errors import InvalidInput
from mailflow.domain.models import Severity

REFERENCE_PATTERN = r"^[A-Z]{2,6}-[0-9]{1,6}$"
CVE_PATTERN = re.compile(r"^CVE-\d{4}-\d{4,}$")
MAX_DEADLINE_HOURS = 24 * 30

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class AudienceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organisations: list[Text] = Field(default_factory=list)
    types: list[Text] = Field(default_factory=list)


class AlertSpec(BaseModel):
    """What a publisher writes to issue an alert."""

    model_config = ConfigDict(extra="forbid")

    reference: (
        Annotated[str, StringConstraints(strip_whitespace=True, pattern=REFERENCE_PATTERN)] | None
    ) = None
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    severity: Severity
    summary: Text
    affected: list[Text] = Field(default_factory=list)
    cves: list[str] = Field(default_factory=list)
    remediation: Text
    references: list[str] = Field(default_factory=list)
    deadline_hours: int = Field(default=48, ge=1, le=MAX_DEADLINE_HOURS)
    audience: AudienceSpec = Field(default_factory=AudienceSpec)

    @field_validator("cves")
    @classmethod
    def _cves_look_like_cves(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip().upper() for v in values]
        for value in cleaned:
            if not CVE_PATTERN.match(value):
                raise ValueError(f"{value!r} is not a CVE identifier like CVE-2026-12345")
        return cleaned

    @field_validator("references")
    @classmethod
    def _references_are_web_links(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip() for v in values]
        for value in cleaned:
            if not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
                raise ValueError(f"{value!r} is not an http(s) link")
        return cleaned


def read_alert_file(path: Path) -> AlertSpec:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(str(path), f"cannot read the file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(str(path), f"not UTF-8 text (byte {exc.start})") from exc
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

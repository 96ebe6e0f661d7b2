"""The secret keys, newest first, and where they came from.

One key (``MAILFLOW_SECRET_KEY``) or several (``MAILFLOW_SECRET_KEYS``, or
one a line in the key file), so the key can be rotated: the newest signs
new links and encrypts, every key still verifies and decrypts.  Only one
of the two settings may be given at a level (the environment, or the
TOML file); a key in the environment replaces the file's, whichever name
either uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailflow.settings_values import ConfigError, check_secret_keys

KEY_SETTINGS = ("secret_key", "secret_keys")
KEY_VARIABLES = {"secret_key": "MAILFLOW_SECRET_KEY", "secret_keys": "MAILFLOW_SECRET_KEYS"}
# Where the key is read from when no key setting is given: the demo
# writes one here, beside the embedded database.
DEFAULT_SECRET_KEY_FILE = Path("var/secret-key")


def refuse_both(raw: Mapping[str, str], where: str) -> None:
    """Both key settings at one level would leave it unclear which is meant."""
    if all(name in raw for name in KEY_SETTINGS):
        raise ConfigError(
            "MAILFLOW_SECRET_KEYS",
            f"set in {where} together with MAILFLOW_SECRET_KEY: set one of them "
            "(MAILFLOW_SECRET_KEYS holds every key, newest first)",
        )


def read_key_file(path: Path, *, explicit: bool) -> tuple[str, ...]:
    """The keys in MAILFLOW_SECRET_KEY_FILE, or in var/secret-key when that
    exists: one a line, newest first, blank lines ignored.  Without the
    file the setting is missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError("MAILFLOW_SECRET_KEY_FILE", f"{path} does not exist") from None
        raise ConfigError(
            "MAILFLOW_SECRET_KEY",
            "missing: set it to at least 32 characters of random text "
            '(python3 -c "import secrets; print(secrets.token_urlsafe(48))"), '
            f"or put them in {DEFAULT_SECRET_KEY_FILE}",
        ) from None
    except OSError as exc:
        raise ConfigError(
            "MAILFLOW_SECRET_KEY_FILE", f"cannot read {path}: {exc.strerror}"
        ) from exc
    try:
        return check_secret_keys([line.strip() for line in text.splitlines() if line.strip()])
    except ValueError as exc:
        raise ConfigError("MAILFLOW_SECRET_KEY_FILE", f"{path}: {exc}") from exc


def _given_keys(overrides: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keys a caller passed in, if it did: ``secret_keys`` wins."""
    try:
        if "secret_keys" in overrides:
            return check_secret_keys(list(overrides["secret_keys"]))
        if "secret_key" in overrides:
            return check_secret_keys([overrides["secret_key"]])
    except ValueError as exc:
        raise ConfigError("MAILFLOW_SECRET_KEYS", str(exc)) from exc
    return None


def choose_keys(
    values: Mapping[str, Any], overrides: Mapping[str, Any], origin: str
) -> tuple[tuple[str, ...], str]:
    """The keys, newest first, and where they came from (for ``mailflow
    config``): given by the caller, set by a setting (``origin``), or read
    from the key file."""
    given = _given_keys(overrides)
    if given is not None:
        return given, "given"
    if values.get("secret_keys"):
        return values["secret_keys"], origin
    if values.get("secret_key"):
        return (values["secret_key"],), origin
    named_file = values.get("secret_key_file")
    path = named_file or DEFAULT_SECRET_KEY_FILE
    return read_key_file(path, explicit=named_file is not None), str(path)

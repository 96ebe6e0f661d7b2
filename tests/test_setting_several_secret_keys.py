"""An operator sets several secret keys, newest first, to rotate the key:
in MAILFLOW_SECRET_KEYS or one a line in the key file.  A short or
repeated key is refused by its place in the list, never shown, and so is
setting both MAILFLOW_SECRET_KEY and MAILFLOW_SECRET_KEYS."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailflow.config import ConfigError, Settings, load_settings
from tests.support.cli import mailflow

NEW = "the-newest-key-0123456789-abcdefghijklmnopqrstuv"
OLD = "the-older-key-0123456789-abcdefghijklmnopqrstuvw"
OLDEST = "the-oldest-key-0123456789-abcdefghijklmnopqrstuv"


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # config/mailflow.toml and var/secret-key are looked up from here.
    monkeypatch.chdir(tmp_path)


def refused(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    return caught.value


@pytest.mark.parametrize(
    "written",
    [f"{NEW},{OLD},{OLDEST}", f" {NEW}, {OLD} ,{OLDEST} ", f"{NEW}\n{OLD}\t{OLDEST}"],
    ids=["commas", "commas-and-spaces", "whitespace"],
)
def test_keys_are_read_newest_first_and_the_newest_is_the_secret_key(written: str) -> None:
    settings = load_settings(environ={"MAILFLOW_SECRET_KEYS": written})

    assert settings.secret_keys == (NEW, OLD, OLDEST)
    assert settings.secret_key == NEW


def test_one_key_alone_is_the_only_key() -> None:
    settings = load_settings(environ={"MAILFLOW_SECRET_KEY": NEW})

    assert settings.secret_keys == (NEW,)


def test_a_key_file_holds_one_key_a_line_newest_first(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{NEW}\n\n  {OLD}  \n", encoding="utf-8")

    settings = load_settings(environ={"MAILFLOW_SECRET_KEY_FILE": str(key_file)})

    assert settings.secret_keys == (NEW, OLD)
    assert settings.describe()["MAILFLOW_SECRET_KEYS"] == (
        f"(hidden; 2 keys, newest first, from {key_file})"
    )


def test_a_short_key_is_refused_by_its_place_without_showing_it() -> None:
    problem = refused({"MAILFLOW_SECRET_KEYS": f"{NEW},too-short-a-key"})

    assert problem.setting == "MAILFLOW_SECRET_KEYS"
    assert problem.problem == (
        "key 2 of 2 is too short: each key must be at least 32 characters of random text"
    )
    assert "too-short-a-key" not in str(problem) and NEW not in str(problem)


def test_a_key_given_twice_is_refused_by_its_place_without_showing_it() -> None:
    problem = refused({"MAILFLOW_SECRET_KEYS": f"{NEW},{OLD},{NEW}"})

    assert problem.setting == "MAILFLOW_SECRET_KEYS"
    assert problem.problem == "key 3 of 3 is the same as key 1: each key must be different"
    assert NEW not in str(problem)


def test_a_key_file_with_a_key_twice_or_none_is_refused_naming_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{NEW}\n{NEW}\n", encoding="utf-8")

    problem = refused({"MAILFLOW_SECRET_KEY_FILE": str(key_file)})

    assert problem.setting == "MAILFLOW_SECRET_KEY_FILE"
    assert (
        problem.problem
        == f"{key_file}: key 2 of 2 is the same as key 1: each key must be different"
    )

    key_file.write_text("\n\n", encoding="utf-8")
    empty = refused({"MAILFLOW_SECRET_KEY_FILE": str(key_file)})
    assert empty.problem.startswith(f"{key_file}: no key given")


def test_an_empty_list_of_keys_is_refused() -> None:
    problem = refused({"MAILFLOW_SECRET_KEYS": " , "})

    assert problem.setting == "MAILFLOW_SECRET_KEYS"
    assert problem.problem.startswith("no key given")


def test_setting_both_the_key_and_the_keys_is_refused() -> None:
    problem = refused({"MAILFLOW_SECRET_KEY": NEW, "MAILFLOW_SECRET_KEYS": f"{NEW},{OLD}"})

    assert problem.setting == "MAILFLOW_SECRET_KEYS"
    assert "together with MAILFLOW_SECRET_KEY: set one of them" in problem.problem


def test_keys_in_the_environment_replace_a_key_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "mailflow.toml"
    config.write_text(f'secret_key = "{OLD}"\n', encoding="utf-8")

    settings = load_settings(
        environ={"MAILFLOW_CONFIG": str(config), "MAILFLOW_SECRET_KEYS": f"{NEW} {OLD}"}
    )

    assert settings.secret_keys == (NEW, OLD)
    assert settings.key_origin == "MAILFLOW_SECRET_KEYS"


def test_settings_made_with_a_key_that_is_not_the_newest_are_refused() -> None:
    with pytest.raises(ValueError, match="first"):
        Settings(database_url="sqlite://", secret_key=OLD, secret_keys=(NEW, OLD))


def test_the_config_command_shows_how_many_keys_but_never_a_key() -> None:
    result = mailflow("config", MAILFLOW_SECRET_KEY=None, MAILFLOW_SECRET_KEYS=f"{NEW},{OLD}")

    assert result.exit_code == 0, result.stderr
    assert NEW not in result.stdout and OLD not in result.stdout
    lines = result.stdout.splitlines()
    assert "MAILFLOW_SECRET_KEY=(hidden; from MAILFLOW_SECRET_KEYS)" in lines
    assert "MAILFLOW_SECRET_KEYS=(hidden; 2 keys, newest first, from MAILFLOW_SECRET_KEYS)" in lines


def test_a_command_with_a_bad_key_stops_before_touching_anything() -> None:
    result = mailflow(
        "keys", "rotate", MAILFLOW_SECRET_KEY=None, MAILFLOW_SECRET_KEYS=f"{NEW},{NEW}"
    )

    assert result.exit_code == 2
    assert result.stderr == (
        "mailflow: configuration: MAILFLOW_SECRET_KEYS: "
        "key 2 of 2 is the same as key 1: each key must be different\n"
    )
    assert not Path("var").exists()  # no database was made


def test_keys_in_the_config_file_are_read_and_both_names_there_are_refused(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mailflow.toml"
    config.write_text(f'secret_keys = "{NEW}, {OLD}"\n', encoding="utf-8")

    settings = load_settings(environ={"MAILFLOW_CONFIG": str(config)})

    assert settings.secret_keys == (NEW, OLD)
    assert settings.key_origin == str(config)

    config.write_text(f'secret_keys = "{NEW}, {OLD}"\nsecret_key = "{NEW}"\n', encoding="utf-8")
    problem = refused({"MAILFLOW_CONFIG": str(config)})
    assert problem.setting == "MAILFLOW_SECRET_KEYS"
    assert problem.problem.startswith(f"set in {config} together with MAILFLOW_SECRET_KEY")


def test_settings_never_show_a_key_in_their_repr() -> None:
    settings = load_settings(environ={"MAILFLOW_SECRET_KEYS": f"{NEW},{OLD}"})

    shown = repr(settings)

    assert NEW not in shown and OLD not in shown

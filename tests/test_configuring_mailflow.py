"""Settings: an operator configures mailflow with a TOML file and MAILFLOW_*
environment variables, and is told exactly which setting is wrong."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailflow.config import (
    ConfigError,
    Settings,
    load_settings,
    parse_imap_url,
    parse_relay,
    unknown_variables,
)
from tests.support.cli import mailflow

SECRET = "an-operator-secret-0123456789-abcdefghijklmnop"
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config/mailflow.toml is looked up from the working directory: run
    each test where there is none, so a developer's file cannot leak in."""
    monkeypatch.chdir(tmp_path)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailflow.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_only_a_secret_key_is_needed_and_everything_else_has_a_default() -> None:
    settings = load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET})

    assert settings.secret_key == SECRET
    assert settings.database_url == "sqlite:///var/mailflow.db"
    assert settings.broker_url is None
    assert settings.smtp_relay is None
    assert settings.smtp_connections == 4
    assert settings.mail_domain == "mailflow.localhost"
    assert settings.from_address == "Cyber alerts <alerts@mailflow.localhost>"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.timezone == "Europe/London"
    assert settings.answer_link_days == 30
    # A dead sender's emails are taken over within 30 s.
    assert settings.send_lease_seconds == 20


def test_a_toml_file_is_read_and_environment_variables_win_over_it(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        f'secret_key = "{SECRET}"\n'
        'mail_domain = "alerts.example.org"\n'
        "smtp_connections = 8\n"
        "smtp_timeout_seconds = 12.5\n"
        'base_url = "https://alerts.example.org/"\n'
        'database_url = "postgresql://mailflow@db.example.org/mailflow"\n',
    )

    settings = load_settings(
        environ={"MAILFLOW_CONFIG": str(config), "MAILFLOW_SMTP_CONNECTIONS": "2"}
    )

    assert settings.mail_domain == "alerts.example.org"
    assert settings.smtp_timeout_seconds == 12.5
    assert settings.smtp_connections == 2  # the environment won
    assert settings.base_url == "https://alerts.example.org"
    assert settings.database_url == "postgresql+psycopg://mailflow@db.example.org/mailflow"
    assert settings.from_address == "Cyber alerts <alerts@alerts.example.org>"


def test_the_default_config_file_is_found_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    write_toml(tmp_path / "config", 'service_name = "Regional cyber alerts"\n')

    settings = load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET})

    assert settings.service_name == "Regional cyber alerts"


def test_overrides_win_over_the_environment() -> None:
    settings = load_settings(
        environ={"MAILFLOW_SECRET_KEY": SECRET, "MAILFLOW_QUEUE_NAME": "from-env"},
        overrides={"queue_name": "from-test"},
    )

    assert settings.queue_name == "from-test"


def test_a_missing_secret_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={})

    assert caught.value.setting == "MAILFLOW_SECRET_KEY"
    assert "missing" in caught.value.problem


def test_the_secret_key_can_come_from_var_secret_key_in_the_working_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret-key").write_text(SECRET + "\n", encoding="utf-8")

    settings = load_settings(environ={})

    assert settings.secret_key == SECRET
    assert settings.describe()["MAILFLOW_SECRET_KEY"] == "(hidden; from var/secret-key)"
    assert settings.describe()["MAILFLOW_SECRET_KEY_FILE"] == "var/secret-key"


def test_a_named_secret_key_file_is_read_and_shown_as_where_the_key_came_from(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "keys" / "mailflow.key"
    key_file.parent.mkdir()
    key_file.write_text(SECRET + "\n", encoding="utf-8")

    settings = load_settings(environ={"MAILFLOW_SECRET_KEY_FILE": str(key_file)})

    assert settings.secret_key == SECRET
    assert settings.describe()["MAILFLOW_SECRET_KEY_FILE"] == str(key_file)
    assert settings.describe()["MAILFLOW_SECRET_KEY"] == f"(hidden; from {key_file})"


def test_a_named_secret_key_file_that_does_not_exist_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_SECRET_KEY_FILE": str(tmp_path / "no-such-key")})

    assert caught.value.setting == "MAILFLOW_SECRET_KEY_FILE"
    assert "no-such-key" in caught.value.problem


def test_a_short_secret_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_SECRET_KEY": "short"})

    assert caught.value.setting == "MAILFLOW_SECRET_KEY"
    assert "32" in caught.value.problem


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAILFLOW_SMTP_RELAY", "http://x"),
        ("MAILFLOW_SMTP_RELAY", "smtp://relay.example.org:25?tls=yes"),
        ("MAILFLOW_SMTP_RELAY", "smtps://relay.example.org?starttls=true"),
        ("MAILFLOW_SMTP_CONNECTIONS", "zero"),
        ("MAILFLOW_SMTP_CONNECTIONS", "0"),
        ("MAILFLOW_SMTP_TIMEOUT_SECONDS", "-1"),
        ("MAILFLOW_BASE_URL", "notaurl"),
        ("MAILFLOW_BROKER_URL", "kafka://x"),
        ("MAILFLOW_DATABASE_URL", "mysql://db/mailflow"),
        ("MAILFLOW_DATABASE_URL", "postgresql://mailflow@db.example.org:fivefourthreetwo/x"),
        ("MAILFLOW_MAIL_DOMAIN", "not a domain"),
        ("MAILFLOW_FROM", "nobody"),
        ("MAILFLOW_TIMEZONE", "Europe/Atlantis"),
        ("MAILFLOW_IMAP_URL", "pop3://u:p@mail.example.org/"),
        ("MAILFLOW_IMAP_URL", "imap://mail.example.org/INBOX"),
        ("MAILFLOW_IMAP_URL", "imap://u:p@mail.example.org:onefourthree/INBOX"),
        ("MAILFLOW_IMAP_AFTER", "archive"),
        ("MAILFLOW_SEND_LEASE_SECONDS", "nan"),
        ("MAILFLOW_SEND_LEASE_SECONDS", "inf"),
        ("MAILFLOW_LOG_FORMAT", "yaml"),
        ("MAILFLOW_PROGRESS_SECONDS", "0"),
    ],
)
def test_a_malformed_environment_variable_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET, variable: value})

    assert caught.value.setting == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_a_malformed_value_in_the_toml_file_is_refused_by_its_setting(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'smtp_connections = "lots"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_CONFIG": str(config), "MAILFLOW_SECRET_KEY": SECRET})

    assert caught.value.setting == "MAILFLOW_SMTP_CONNECTIONS"


def test_a_toml_table_where_text_belongs_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, '[smtp_relay]\nhost = "relay.example.org"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_CONFIG": str(config), "MAILFLOW_SECRET_KEY": SECRET})

    assert caught.value.setting == "MAILFLOW_SMTP_RELAY"


def test_an_unknown_key_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'smtp_host = "relay.example.org"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_CONFIG": str(config), "MAILFLOW_SECRET_KEY": SECRET})

    assert caught.value.setting == "MAILFLOW_CONFIG"
    assert "smtp_host" in caught.value.problem


def test_a_toml_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "mail_domain = alerts.example.org = oops\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_CONFIG": str(config), "MAILFLOW_SECRET_KEY": SECRET})

    assert caught.value.setting == "MAILFLOW_CONFIG"
    assert "not valid TOML" in caught.value.problem


def test_a_config_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={
                "MAILFLOW_CONFIG": str(tmp_path / "nowhere.toml"),
                "MAILFLOW_SECRET_KEY": SECRET,
            }
        )

    assert caught.value.setting == "MAILFLOW_CONFIG"
    assert "nowhere.toml" in caught.value.problem


def test_a_relay_url_gives_host_port_credentials_and_starttls() -> None:
    settings = load_settings(
        environ={
            "MAILFLOW_SECRET_KEY": SECRET,
            "MAILFLOW_SMTP_RELAY": "smtp://user:p%40ss@host:2525?starttls=true",
        }
    )

    relay = settings.smtp_relay
    assert relay is not None
    assert (relay.host, relay.port) == ("host", 2525)
    assert relay.username == "user"
    assert relay.password == "p@ss"
    assert relay.start_tls is True
    assert relay.use_tls is False


def test_smtps_defaults_to_port_465_and_smtp_to_port_25() -> None:
    tls = parse_relay("smtps://relay.example.org")
    plain = parse_relay("smtp://relay.example.org")

    assert (tls.port, tls.use_tls, tls.start_tls) == (465, True, False)
    assert (plain.port, plain.use_tls, plain.start_tls) == (25, False, False)
    assert tls.username is None and tls.password is None


def test_describing_the_settings_never_shows_a_secret() -> None:
    settings = load_settings(
        environ={
            "MAILFLOW_SECRET_KEY": SECRET,
            "MAILFLOW_SMTP_RELAY": "smtp://mailer:relay-pw-9876@relay.example.org:587?starttls=true",
            "MAILFLOW_DATABASE_URL": "postgresql://mailflow:db-pw-5432@db.example.org/mailflow",
            "MAILFLOW_BROKER_URL": "amqp://rabbit:broker-pw-1234@mq.example.org:5672/",
        }
    )

    described = settings.describe()
    everything = "\n".join(f"{name} {value}" for name, value in described.items())

    for secret in (SECRET, "relay-pw-9876", "db-pw-5432", "broker-pw-1234"):
        assert secret not in everything
    assert described["MAILFLOW_SECRET_KEY"] == "(hidden; from MAILFLOW_SECRET_KEY)"
    assert described["MAILFLOW_SMTP_RELAY"] == (
        "smtp://mailer:***@relay.example.org:587?starttls=true"
    )
    assert "db.example.org/mailflow" in described["MAILFLOW_DATABASE_URL"]
    assert set(described) >= {"MAILFLOW_DATABASE_URL", "MAILFLOW_FROM", "MAILFLOW_QUEUE_NAME"}


def test_an_imap_url_is_read_once_into_the_mailbox_it_names() -> None:
    settings = load_settings(
        environ={
            "MAILFLOW_SECRET_KEY": SECRET,
            "MAILFLOW_IMAP_URL": "imaps://replies%40example.org:imap%40pw%2F7@Mail.Example.org"
            "/Replies%20In",
        }
    )

    imap = settings.imap_url
    assert imap is not None
    assert (imap.host, imap.port, imap.use_tls) == ("mail.example.org", 993, True)
    assert (imap.username, imap.password) == ("replies@example.org", "imap@pw/7")
    assert imap.mailbox == "Replies In"
    assert imap.key == "replies@example.org@mail.example.org:993/Replies In"


def test_an_imap_url_without_port_or_mailbox_uses_143_and_the_inbox() -> None:
    imap = parse_imap_url("imap://analyst:pw@127.0.0.1")

    assert (imap.host, imap.port, imap.use_tls, imap.mailbox) == ("127.0.0.1", 143, False, "INBOX")
    assert imap.key == "analyst@127.0.0.1:143/INBOX"


def test_the_imap_url_is_described_as_it_was_written_with_the_password_hidden() -> None:
    written = "imap://replies%40example.org:imap-pw-2468@Mail.Example.org:1143/Replies%20In"
    settings = load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET, "MAILFLOW_IMAP_URL": written})

    described = settings.describe()["MAILFLOW_IMAP_URL"]

    assert described == "imap://replies%40example.org:***@Mail.Example.org:1143/Replies%20In"
    assert "imap-pw-2468" not in repr(settings)
    assert "imap-pw-2468" not in repr(settings.imap_url)


def test_settings_objects_do_not_show_secrets_in_their_repr() -> None:
    settings = load_settings(
        environ={
            "MAILFLOW_SECRET_KEY": SECRET,
            "MAILFLOW_SMTP_RELAY": "smtp://mailer:relay-pw-9876@relay.example.org:587",
        }
    )

    shown = repr(settings)

    assert isinstance(settings, Settings)
    assert SECRET not in shown
    assert "relay-pw-9876" not in shown
    assert "relay.example.org" in shown


def test_the_config_command_without_a_secret_key_stops_and_names_it(tmp_path: Path) -> None:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MAILFLOW_")
    }

    finished = subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "mailflow"), "config"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert finished.returncode == 2
    assert "MAILFLOW_SECRET_KEY" in finished.stderr
    assert finished.stdout == ""


def test_the_config_command_lists_settings_with_the_secret_hidden(tmp_path: Path) -> None:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MAILFLOW_")
    }
    environment["MAILFLOW_SECRET_KEY"] = SECRET
    environment["MAILFLOW_MAIL_DOMAIN"] = "alerts.example.org"

    finished = subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "mailflow"), "config"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr
    assert SECRET not in finished.stdout
    lines = {
        name: value.strip()
        for name, _, value in (line.partition("=") for line in finished.stdout.splitlines())
    }
    assert lines["MAILFLOW_MAIL_DOMAIN"] == "alerts.example.org"
    assert lines["MAILFLOW_SECRET_KEY"] == "(hidden; from MAILFLOW_SECRET_KEY)"


def test_the_help_address_defaults_to_the_from_address_and_can_name_a_service_desk() -> None:
    default = load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET})
    desk = load_settings(
        environ={"MAILFLOW_SECRET_KEY": SECRET, "MAILFLOW_HELP_EMAIL": "desk@nhs.example"}
    )

    assert default.help_email == "alerts@mailflow.localhost"
    assert desk.help_email == "desk@nhs.example"
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET, "MAILFLOW_HELP_EMAIL": "Desk <x@y>"})
    assert error.value.setting == "MAILFLOW_HELP_EMAIL"


def test_the_settings_are_described_as_a_person_would_write_them(tmp_path: Path) -> None:
    config = write_toml(tmp_path, f'secret_key = "{SECRET}"\n')

    described = load_settings(
        environ={
            "MAILFLOW_CONFIG": str(config),
            "MAILFLOW_INBOUND_ADDR": "[::1]:2525",
            "MAILFLOW_SERVICE_ADDRESSES": "alerts, postmaster,abuse",
            "MAILFLOW_MAILDIR": "mail/out",
        }
    ).describe()

    assert described["MAILFLOW_INBOUND_ADDR"] == "[::1]:2525"
    assert described["MAILFLOW_WEB_ADDR"] == "127.0.0.1:8000"
    assert described["MAILFLOW_SERVICE_ADDRESSES"] == "alerts,postmaster,abuse"
    assert described["MAILFLOW_SMTP_TIMEOUT_SECONDS"] == "60"
    assert described["MAILFLOW_MAILDIR"] == "mail/out"
    assert described["MAILFLOW_BROKER_URL"] == ""
    assert described["MAILFLOW_SECRET_KEY"] == f"(hidden; from {config})"
    assert described["MAILFLOW_SECRET_KEY_FILE"] == "var/secret-key"


def test_a_misspelt_variable_is_found_with_the_name_it_was_meant_to_be() -> None:
    environ = {
        "MAILFLOW_SECRET_KEY": SECRET,
        "MAILFLOW_DATABSE_URL": "sqlite:///elsewhere.db",
        "MAILFLOW_SECRET_KEY_FILE": "var/secret-key",
        "MAILFLOW_CONFIG": "config/mailflow.toml",
        "MAILFLOW_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1/test",
        "MAILFLOW_ZZZ": "1",
        "PATH": "/usr/bin",
    }

    assert unknown_variables(environ) == [
        ("MAILFLOW_DATABSE_URL", "MAILFLOW_DATABASE_URL"),
        ("MAILFLOW_ZZZ", None),
    ]


def test_the_config_command_writes_each_setting_as_it_would_be_set(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret-key").write_text(SECRET + "\n", encoding="utf-8")

    result = mailflow("config", MAILFLOW_SECRET_KEY=None)

    assert result.exit_code == 0, result.stderr
    assert SECRET not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "MAILFLOW_DATABASE_URL=sqlite:///var/mailflow.db",
        "MAILFLOW_SECRET_KEY=(hidden; from var/secret-key)",
        "MAILFLOW_SECRET_KEY_FILE=var/secret-key",
    ]
    assert "MAILFLOW_INBOUND_ADDR=127.0.0.1:8025" in lines
    assert "MAILFLOW_SERVICE_ADDRESSES=alerts,postmaster,access,people" in lines
    assert "MAILFLOW_SMTP_TIMEOUT_SECONDS=60" in lines
    assert "MAILFLOW_MAILDIR=var/maildir" in lines


def test_a_misspelt_variable_is_named_in_a_warning_with_the_setting_it_was_meant_to_be() -> None:
    result = mailflow("config", MAILFLOW_DATABSE_URL="sqlite:///elsewhere.db")

    assert result.exit_code == 0
    assert result.stderr == (
        "mailflow: warning: MAILFLOW_DATABSE_URL is not a mailflow setting and is ignored "
        "(did you mean MAILFLOW_DATABASE_URL?)\n"
    )
    assert "MAILFLOW_DATABASE_URL=sqlite:///var/mailflow.db" in result.stdout.splitlines()


def test_a_send_lease_too_short_to_renew_in_time_is_refused_saying_why() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET, "MAILFLOW_SEND_LEASE_SECONDS": "4"})

    assert caught.value.setting == "MAILFLOW_SEND_LEASE_SECONDS"
    assert "between 5 and 86400 seconds" in caught.value.problem
    assert "renews" in caught.value.problem
    accepted = load_settings(
        environ={"MAILFLOW_SECRET_KEY": SECRET, "MAILFLOW_SEND_LEASE_SECONDS": "5"}
    )
    assert accepted.send_lease_seconds == 5

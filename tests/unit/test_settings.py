"""Settings are read from PASS_STATUS_* variables only, validated, and documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from consumer.errors import ConfigError
from consumer.settings import Settings, describe

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_local_services_and_design_topic_names() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.mongodb_uri == "mongodb://127.0.0.1:27017"
    assert s.mongodb_database == "cache"
    assert s.topic_ticket_used == "bytemark.ticket-used.v1"
    assert s.topic_tick == "bytemark.tick.v1"
    assert s.topic_status_changed == "bytemark.pass-status-changed.v1"
    assert s.topic_check_log == "bytemark.check-log.v1"
    assert s.topic_dead_letter == "bytemark.dead-letter.v1"


def test_values_are_read_and_converted_from_prefixed_variables() -> None:
    s = Settings.from_env(
        {
            "PASS_STATUS_HTTP_PORT": "9100",
            "PASS_STATUS_CHECK_LOG_INTERVAL_SECONDS": "2.5",
            "PASS_STATUS_GROUP_ID": "g1",
            "HTTP_PORT": "1",  # unprefixed: ignored
        }
    )
    assert (s.http_port, s.check_log_interval_seconds, s.group_id) == (9100, 2.5, "g1")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PASS_STATUS_HTTP_PORT", "eighty", "PASS_STATUS_HTTP_PORT: cannot read 'eighty'"),
        ("PASS_STATUS_HTTP_PORT", "70000", "PASS_STATUS_HTTP_PORT must be between 0 and 65535"),
        (
            "PASS_STATUS_KAFKA_SECURITY_PROTOCOL",
            "TLS",
            "PASS_STATUS_KAFKA_SECURITY_PROTOCOL must be one of",
        ),
        ("PASS_STATUS_USER_CONCURRENCY", "0", "PASS_STATUS_USER_CONCURRENCY must be at least 1"),
        ("PASS_STATUS_LOG_LEVEL", "LOUD", "PASS_STATUS_LOG_LEVEL must be"),
        (
            "PASS_STATUS_DEAD_LETTER_MAX_BYTES",
            "1048577",
            "PASS_STATUS_DEAD_LETTER_MAX_BYTES must be at most 1048576",
        ),
        (
            "PASS_STATUS_DEAD_LETTER_MAX_BYTES",
            "16383",
            "PASS_STATUS_DEAD_LETTER_MAX_BYTES must be at least 16384",
        ),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({variable: value})


def test_secrets_include_sasl_password_and_uri_password() -> None:
    s = Settings.from_env(
        {
            "PASS_STATUS_KAFKA_SASL_PASSWORD": "kafka-pw",
            "PASS_STATUS_MONGODB_URI": "mongodb://app:p%40ss@db:27017/?tls=true",
        }
    )
    assert s.secrets() == ("kafka-pw", "p@ss")


def test_bad_setting_exits_2_with_one_line_for_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        env={"PASS_STATUS_HTTP_PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "pass-status: error: PASS_STATUS_HTTP_PORT: cannot read 'eighty'"
    ]


def test_configuration_doc_lists_every_setting() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    for name, _default, _help in describe():
        assert f"`{name}`" in doc, f"{name} missing from docs/configuration.md"
    check = subprocess.run(
        [sys.executable, "scripts/gen_config_doc.py", "--check"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr.decode()


def test_unknown_prefixed_variables_are_named_with_the_setting_they_resemble() -> None:
    from consumer.settings import unknown_variables  # noqa: PLC0415

    environ = {
        "PASS_STATUS_GRUOP_ID": "g",
        "PASS_STATUS_HTTP_PORT": "1",  # a setting
        "PASS_STATUS_LOCAL_KAFKA_PORT": "9092",  # scripts/services' own
        "PASS_STATUS_ZZZ": "1",
        "OTHER": "x",
    }
    assert unknown_variables(environ) == [
        "PASS_STATUS_GRUOP_ID (PASS_STATUS_GROUP_ID?)",
        "PASS_STATUS_ZZZ",
    ]


def test_start_warns_once_about_unknown_variables_without_their_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import orjson  # noqa: PLC0415
    from consumer import commands  # noqa: PLC0415

    for name in [n for n in os.environ if n.startswith("PASS_STATUS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PASS_STATUS_KAFKA_SASL_PASWORD", "hunter2")
    settings = commands._settings_or_exit()
    assert isinstance(settings, Settings)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "hunter2" not in lines[0]
    line = orjson.loads(lines[0])
    assert line["event"] == "unknown_settings_ignored"
    assert line["variables"] == [
        "PASS_STATUS_KAFKA_SASL_PASWORD (PASS_STATUS_KAFKA_SASL_PASSWORD?)"
    ]


# --- secrets from files (PASS_STATUS_<SECRET>_FILE) ----------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("PASS_STATUS_MONGODB_URI", "mongodb://app:s3cret@db:27017/?tls=true", "mongodb_uri"),
        ("PASS_STATUS_KAFKA_SASL_PASSWORD", "s3cret", "kafka_sasl_password"),
    ],
)
def test_every_secret_setting_is_read_from_the_file_its_file_variable_names(
    tmp_path: Path, variable: str, value: str, field: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")  # as `kubectl create secret --from-file` of an echo
    settings = Settings.from_env({variable + "_FILE": str(secret)})
    assert getattr(settings, field) == value
    assert "s3cret" in settings.secrets()


def test_every_secret_setting_has_a_file_variable() -> None:
    import dataclasses  # noqa: PLC0415

    from consumer.settings import unknown_variables  # noqa: PLC0415

    secret_fields = [f.name for f in dataclasses.fields(Settings) if f.metadata["secret"]]
    assert secret_fields
    documented = {name for name, _default, _help in describe()}
    for name in secret_fields:
        variable = f"PASS_STATUS_{name.upper()}_FILE"
        assert variable in documented
        assert unknown_variables({variable: "/run/secrets/x"}) == []


def test_a_secret_and_its_file_variable_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file")
    with pytest.raises(
        ConfigError,
        match="set PASS_STATUS_KAFKA_SASL_PASSWORD or PASS_STATUS_KAFKA_SASL_PASSWORD_FILE, not "
        "both",
    ):
        Settings.from_env(
            {
                "PASS_STATUS_KAFKA_SASL_PASSWORD": "literal",
                "PASS_STATUS_KAFKA_SASL_PASSWORD_FILE": str(secret),
            }
        )


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read"), ("\n", "is empty")])
def test_an_unreadable_or_empty_secret_file_is_a_config_error_without_content(
    tmp_path: Path, content: str | None, message: str
) -> None:
    secret = tmp_path / "uri"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env({"PASS_STATUS_MONGODB_URI_FILE": str(secret)})
    assert str(caught.value).startswith("PASS_STATUS_MONGODB_URI_FILE: ")
    assert str(secret) in str(caught.value)


def test_an_unreadable_secret_file_exits_2_with_one_line_for_run(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        env={"PASS_STATUS_KAFKA_SASL_PASSWORD_FILE": str(missing), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    variable = "PASS_STATUS_KAFKA_SASL_PASSWORD_FILE"
    line = f"pass-status: error: {variable}: cannot read {missing}: No such file or directory"
    assert result.stderr.decode().splitlines() == [line]


@pytest.mark.parametrize("value", ["0", "00"])
def test_write_concern_zero_is_refused_as_conditional_writes_need_acknowledgement(
    value: str,
) -> None:
    # w:0 returns no matched_count: a conditional write could not tell a lost race from
    # an applied change.
    with pytest.raises(ConfigError, match=r"PASS_STATUS_MONGODB_WRITE_CONCERN.*acknowledged"):
        Settings.from_env({"PASS_STATUS_MONGODB_WRITE_CONCERN": value})


def test_write_concern_of_one_or_more_members_is_accepted() -> None:
    assert Settings.from_env({"PASS_STATUS_MONGODB_WRITE_CONCERN": "1"}).mongodb_write_concern == (
        "1"
    )


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize(
    "variable",
    [
        "PASS_STATUS_BACKOFF_INITIAL_SECONDS",
        "PASS_STATUS_BACKOFF_MAX_SECONDS",
        "PASS_STATUS_CHECK_LOG_INTERVAL_SECONDS",
        "PASS_STATUS_SHUTDOWN_GRACE_SECONDS",
        "PASS_STATUS_LIVENESS_MAX_STALL_SECONDS",
    ],
)
def test_non_finite_numeric_settings_are_refused_naming_the_variable(
    variable: str, value: str
) -> None:
    # A NaN back-off compares false with every bound, so it passed the minimums and spun.
    with pytest.raises(ConfigError, match=f"{variable} must be a finite number"):
        Settings.from_env({variable: value})

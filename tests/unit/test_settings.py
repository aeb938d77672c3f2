"""Settings: defaults, sources and their precedence, and errors that name field, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluiceway.errors import SettingsError
from sluiceway.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("SLUICEWAY_CONFIG", "SLUICEWAY_SECRETS_FILE", "SLUICEWAY_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./sluiceway.yaml unless a test writes one


def test_defaults_describe_the_local_stack() -> None:
    settings = load_settings()
    assert settings.postgres.port == 15432
    assert settings.kafka.bootstrap() == "127.0.0.1:19092"
    assert settings.s3.endpoint() == "http://127.0.0.1:18333"
    assert settings.bigquery.endpoint() == "http://127.0.0.1:19050"
    assert settings.state_dir.name == ".sluiceway"


def test_three_brokers_get_distinct_ports() -> None:
    settings = load_settings(kafka={"brokers": 3})
    assert settings.kafka.bootstrap() == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"
    assert settings.kafka.controller_ports() == [19093, 19193, 19293]


def test_precedence_override_env_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sluiceway.yaml"
    config.write_text("postgres:\n  port: 20001\n  user: from_file\n  database: filedb\n")
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("postgres:\n  password: from-secrets\n  user: from_secrets\n")
    monkeypatch.setenv("SLUICEWAY_SECRETS_FILE", str(secrets))
    monkeypatch.setenv("SLUICEWAY_POSTGRES__PORT", "20002")
    settings = load_settings(postgres={"database": "override"})
    assert settings.postgres.port == 20002  # env over file
    assert settings.postgres.user == "from_secrets"  # secrets over file
    assert settings.postgres.password.get_secret_value() == "from-secrets"
    assert settings.postgres.database == "override"  # overrides over everything


def test_cloud_endpoints_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEWAY_S3__MANAGED", "false")
    monkeypatch.setenv("SLUICEWAY_S3__ENDPOINT_URL", "")
    monkeypatch.setenv("SLUICEWAY_KAFKA__BOOTSTRAP_SERVERS", "broker-1.example:9092")
    monkeypatch.setenv("SLUICEWAY_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SLUICEWAY_KAFKA__SASL_PASSWORD", "hunter2")
    settings = load_settings()
    assert settings.s3.endpoint() is None  # AWS itself
    config = settings.kafka.client_config()
    assert config["bootstrap.servers"] == "broker-1.example:9092"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(settings)


def test_invalid_port_names_field_value_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEWAY_POSTGRES__PORT", "99999")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "postgres.port = 99999" in message
    assert "less than or equal to 65535" in message
    assert "SLUICEWAY_POSTGRES__PORT" in message
    assert "TCP port of PostgreSQL" in message


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("snowflake:\n  password: [not, a, string, s3cr3t]\n")
    with pytest.raises(SettingsError) as info:
        load_settings(config)
    assert "s3cr3t" not in str(info.value)
    assert "snowflake.password = **********" in str(info.value)


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("postgress:\n  port: 1\n")
    with pytest.raises(SettingsError, match="postgress: unknown setting"):
        load_settings(config)


def test_two_services_on_one_port_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"mariadb.port and postgres.port both use port 15432"):
        load_settings(mariadb={"port": 15432})


def test_s3_port_must_leave_room_for_seaweedfs_ports() -> None:
    with pytest.raises(SettingsError, match="below 55532"):
        load_settings(s3={"port": 60000})


def test_bad_yaml_and_missing_file_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("postgres: [unclosed\n")
    with pytest.raises(SettingsError, match="is not valid YAML"):
        load_settings(broken)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="must hold a mapping"):
        load_settings(listing)

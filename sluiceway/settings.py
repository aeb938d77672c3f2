"""Typed settings for the local stack and every connection Sluiceway makes.

One frozen pydantic model per component, gathered in `Settings`. Values come from, highest
first: keyword overrides, environment variables (``SLUICEWAY_POSTGRES__PORT=5433``), a secrets
file (YAML, ``SLUICEWAY_SECRETS_FILE``), the settings file (YAML, ``SLUICEWAY_CONFIG`` or
``./sluiceway.yaml``), and the defaults, which describe the local stack on 127.0.0.1.

Every component has ``managed``: true means ``sluiceway stack up`` runs it locally; false means
Sluiceway only connects to the endpoint given (a real cloud service). Passwords are `SecretStr`:
they print as ``**********`` and never reach logs, errors or events.

Invalid settings fail at load with a `SettingsError` naming each field, its value and the fix.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sluiceway.errors import SettingsError
from sluiceway.validation import describe_errors

__all__ = [
    "BigQuerySettings",
    "DagsterSettings",
    "KafkaSettings",
    "MariaDBSettings",
    "PostgresSettings",
    "S3Settings",
    "Settings",
    "SnowflakeSettings",
    "load_settings",
]

ENV_PREFIX = "SLUICEWAY_"
ENV_DELIMITER = "__"
REPO_ROOT = Path(__file__).resolve().parent.parent

Port = int
_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("_FILE_VALUES", default={})  # noqa: B039


def _port(default: int, what: str) -> Any:
    return Field(default, ge=1024, le=65535, description=f"TCP port of {what} (1024-65535)")


class _Component(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    managed: bool = Field(
        True, description="true: `sluiceway stack up` runs it on 127.0.0.1; false: connect only"
    )


class PostgresSettings(_Component):
    """A PostgreSQL server: CDC source, migration target and sink."""

    host: str = Field("127.0.0.1", description="host name or address of the server")
    port: Port = _port(15432, "PostgreSQL")
    user: str = Field("sluiceway", min_length=1, description="role to connect as")
    password: SecretStr = Field(SecretStr("sluiceway"), description="password of the role")
    database: str = Field("sluiceway", min_length=1, description="database to connect to")
    max_replication_slots: int = Field(
        20, ge=1, description="max_replication_slots of the managed server"
    )

    def dsn(self, database: str | None = None) -> str:
        """A libpq connection string. It holds the password: never log it."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password.get_secret_value()} dbname={database or self.database}"
        )


class MariaDBSettings(_Component):
    """A MariaDB/MySQL server: binlog and query-based CDC source, migration source."""

    host: str = Field("127.0.0.1", description="host name or address of the server")
    port: Port = _port(13306, "MariaDB")
    user: str = Field("sluiceway", min_length=1, description="user to connect as")
    password: SecretStr = Field(SecretStr("sluiceway"), description="password of the user")
    database: str = Field("sluiceway", min_length=1, description="database to connect to")
    server_id: int = Field(1, ge=1, description="server_id of the managed server")


class KafkaSettings(_Component):
    """The Kafka cluster: the central log."""

    port: Port = _port(19092, "the first local broker (broker i listens on port + 100*i)")
    controller_port: Port = _port(19093, "the first local KRaft controller")
    brokers: int = Field(1, ge=1, le=5, description="brokers of the managed cluster (1 or 3)")
    heap_mb: int = Field(512, ge=128, description="JVM heap of each managed broker, in MiB")
    bootstrap_servers: str | None = Field(
        None, description="host:port list of an external cluster; default: the local brokers"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="security.protocol of the client connection"
    )
    sasl_mechanism: str | None = Field(None, description="sasl.mechanism, e.g. PLAIN or SCRAM")
    sasl_username: str | None = Field(None, description="sasl.username")
    sasl_password: SecretStr | None = Field(None, description="sasl.password")

    def broker_ports(self) -> list[int]:
        """Client ports of the managed brokers."""
        return [self.port + 100 * i for i in range(self.brokers)]

    def controller_ports(self) -> list[int]:
        """KRaft controller ports of the managed brokers."""
        return [self.controller_port + 100 * i for i in range(self.brokers)]

    def bootstrap(self) -> str:
        """The bootstrap.servers string clients use."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return ",".join(f"127.0.0.1:{p}" for p in self.broker_ports())

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        config = {
            "bootstrap.servers": self.bootstrap(),
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        return config


class S3Settings(_Component):
    """An S3 endpoint: the lake and the long-term archive of change events."""

    port: Port = _port(
        18333, "the local S3 API; SeaweedFS also takes port+1..port+4 and each of them + 10000"
    )
    endpoint_url: str | None = Field(
        None, description="S3 endpoint URL; default: the local SeaweedFS; empty string: AWS"
    )
    region: str = Field("us-east-1", description="region name")
    access_key_id: str = Field("sluiceway", min_length=1, description="access key id")
    secret_access_key: SecretStr = Field(
        SecretStr("sluiceway-secret"), description="secret access key"
    )
    bucket: str = Field("sluiceway", min_length=3, description="bucket for lake and archive")

    @model_validator(mode="after")
    def _grpc_port_fits(self) -> S3Settings:
        if self.managed and self.port + 10004 > 65535:
            raise ValueError(
                f"port {self.port} leaves no room for SeaweedFS's other ports (up to port + "
                "10004); choose a port below 55532"
            )
        return self

    def seaweedfs_ports(self) -> list[int]:
        """Every port the local SeaweedFS listens on: S3, master, volume, filer, admin, gRPCs."""
        http = [self.port + i for i in range(5)]
        return http + [p + 10000 for p in http]

    def endpoint(self) -> str | None:
        """The endpoint URL boto3 is given (None means AWS itself)."""
        if self.endpoint_url is not None:
            return self.endpoint_url or None
        return f"http://127.0.0.1:{self.port}"


class SnowflakeSettings(_Component):
    """A Snowflake account, or the local fakesnow server."""

    host: str = Field(
        "127.0.0.1", description="host; for Snowflake: <account>.snowflakecomputing.com"
    )
    port: Port = _port(18480, "the local fakesnow server")
    protocol: Literal["http", "https"] = Field("http", description="http locally, https in cloud")
    account: str = Field("sluiceway", min_length=1, description="account identifier")
    user: str = Field("sluiceway", min_length=1, description="user to connect as")
    password: SecretStr = Field(SecretStr("sluiceway"), description="password of the user")
    database: str = Field("SLUICEWAY", min_length=1, description="database")
    schema_name: str = Field("PUBLIC", min_length=1, description="schema")
    warehouse: str | None = Field(None, description="virtual warehouse")

    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments for snowflake.connector.connect. They hold the password."""
        args: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "account": self.account,
            "user": self.user,
            "password": self.password.get_secret_value(),
            "database": self.database,
            "schema": self.schema_name,
        }
        if self.warehouse:
            args["warehouse"] = self.warehouse
        return args


class BigQuerySettings(_Component):
    """A BigQuery project, or the local local-bigquery server."""

    port: Port = _port(19050, "the local BigQuery REST API")
    grpc_port: Port = _port(19060, "the local BigQuery gRPC API")
    project: str = Field("local", min_length=1, description="project id")
    api_endpoint: str | None = Field(
        None, description="REST endpoint; default: the local server; empty string: Google"
    )
    credentials_file: Path | None = Field(
        None, description="service-account JSON; none: anonymous (local) or ADC (cloud)"
    )
    location: str = Field("US", description="dataset location")

    def endpoint(self) -> str | None:
        """The api_endpoint the client is given (None means Google itself)."""
        if self.api_endpoint is not None:
            return self.api_endpoint or None
        return f"http://127.0.0.1:{self.port}"


class DagsterSettings(BaseModel):
    """The Dagster webserver."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="address the UI listens on")
    port: Port = _port(3000, "the Dagster UI")


class Settings(BaseSettings):
    """All settings of one Sluiceway installation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        frozen=True,
        extra="forbid",
    )

    state_dir: Path = Field(
        REPO_ROOT / ".sluiceway", description="directory holding all state of the local stack"
    )
    cache_dir: Path = Field(
        REPO_ROOT / ".sluiceway" / "cache",
        description="downloads (jars, virtualenvs) shared by every state directory",
    )
    pipelines_dir: Path = Field(
        REPO_ROOT / "pipelines", description="directory of the pipeline specifications"
    )
    postgres: PostgresSettings = PostgresSettings()
    mariadb: MariaDBSettings = MariaDBSettings()
    kafka: KafkaSettings = KafkaSettings()
    s3: S3Settings = S3Settings()
    snowflake: SnowflakeSettings = SnowflakeSettings()
    bigquery: BigQuerySettings = BigQuerySettings()
    dagster: DagsterSettings = DagsterSettings()

    @model_validator(mode="after")
    def _ports_distinct(self) -> Settings:
        seen: dict[int, str] = {}
        for field, port in self.local_ports():
            if port in seen:
                raise ValueError(
                    f"{field} and {seen[port]} both use port {port}; give each its own port"
                )
            seen[port] = field
        return self

    def local_ports(self) -> list[tuple[str, int]]:
        """(setting, port) of every port the managed stack listens on."""
        ports: list[tuple[str, int]] = []
        if self.postgres.managed:
            ports.append(("postgres.port", self.postgres.port))
        if self.mariadb.managed:
            ports.append(("mariadb.port", self.mariadb.port))
        if self.kafka.managed:
            ports += [("kafka.port", p) for p in self.kafka.broker_ports()]
            ports += [("kafka.controller_port", p) for p in self.kafka.controller_ports()]
        if self.s3.managed:
            ports += [("s3.port", p) for p in self.s3.seaweedfs_ports()]
        if self.snowflake.managed:
            ports.append(("snowflake.port", self.snowflake.port))
        if self.bigquery.managed:
            ports += [("bigquery.port", self.bigquery.port)]
            ports += [("bigquery.grpc_port", self.bigquery.grpc_port)]
        ports.append(("dagster.port", self.dagster.port))
        return ports

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: keyword overrides, environment, then the YAML files that
        # load_settings read (a secrets file already merged over the settings file).
        files = InitSettingsSource(settings_cls, init_kwargs=_FILE_VALUES.get())
        return (init_settings, env_settings, files)


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise SettingsError(
            f"{what} {path} does not exist; create it or unset the variable"
        ) from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{what} {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(
            f"{what} {path} must hold a mapping of settings, not {type(data).__name__}"
        )
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from files, the environment and keyword overrides.

    Args:
        config_file: a YAML settings file; default ``$SLUICEWAY_CONFIG`` or ``./sluiceway.yaml``.
        **overrides: values that win over everything else, e.g. ``state_dir=tmp_path``.

    Raises:
        SettingsError: naming each invalid field, its value and how to fix it.
    """
    values: dict[str, Any] = {}
    source = "sluiceway.yaml"
    path = config_file
    if path is None and os.environ.get("SLUICEWAY_CONFIG"):
        path = Path(os.environ["SLUICEWAY_CONFIG"])
    if path is None and Path("sluiceway.yaml").is_file():
        path = Path("sluiceway.yaml")
    if path is not None:
        values = _read_yaml(path, "settings file")
        source = str(path)
    if os.environ.get("SLUICEWAY_SECRETS_FILE"):
        secrets = _read_yaml(Path(os.environ["SLUICEWAY_SECRETS_FILE"]), "secrets file")
        values = _merge(values, secrets)
    token = _FILE_VALUES.set(values)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        details = describe_errors(exc, Settings, source, ENV_PREFIX)
        raise SettingsError("invalid settings:\n" + details) from None
    finally:
        _FILE_VALUES.reset(token)

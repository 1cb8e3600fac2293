"""The worker's settings, read from the environment once at start (the only reader of it)."""

import os
import re
import socket
import ssl
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from servicenow_worker.auth import tls_context
from servicenow_worker.inputs import DEFAULT_SERVICENOW_MAX_BATCH, DEFAULT_SERVICENOW_MAX_RECORDS

HOST_PATTERN = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


class Settings(BaseSettings):
    """Every setting, named as its environment variable (case-insensitive)."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    # Zeebe connection (docs/contract.md §7; Camunda's own variable names).
    zeebe_address: str = "localhost:26500"
    zeebe_client_id: str | None = Field(
        default=None, validation_alias=AliasChoices("ZEEBE_CLIENT_ID", "CAMUNDA_CLIENT_ID")
    )
    zeebe_client_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ZEEBE_CLIENT_SECRET", "CAMUNDA_CLIENT_SECRET")
    )
    zeebe_authorization_server_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ZEEBE_AUTHORIZATION_SERVER_URL", "CAMUNDA_OAUTH_URL"),
    )
    zeebe_token_audience: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ZEEBE_TOKEN_AUDIENCE", "CAMUNDA_TOKEN_AUDIENCE"),
    )
    zeebe_token_scope: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ZEEBE_TOKEN_SCOPE", "CAMUNDA_CREDENTIALS_SCOPES"),
    )
    camunda_cluster_id: str | None = None
    camunda_cluster_region: str | None = None
    # Transport security: None means "TLS when ZEEBE_ADDRESS is https://, a CA file is given or
    # CAMUNDA_CLUSTER_ID is set, else plaintext"; true/false forces it.
    zeebe_tls: bool | None = None
    zeebe_ca_certificate_path: Path | None = None
    # Multi-tenancy: the tenants whose jobs this worker takes (empty: the default tenant).
    zeebe_tenant_ids: Annotated[tuple[str, ...], NoDecode] = ()

    # Health and metrics HTTP endpoint (/livez, /readyz, /metrics); port 0 picks a free one.
    health_host: str = "0.0.0.0"  # noqa: S104 - probes come from outside the container
    health_port: int = Field(default=9464, ge=0, le=65535)

    # The worker's own behaviour.
    worker_job_type: str = "servicenow:1"
    worker_name: str = Field(default_factory=socket.gethostname)
    worker_max_jobs_in_flight: int = Field(default=128, ge=1, le=10_000)
    worker_job_timeout: float = Field(default=300.0, gt=0)
    worker_poll_timeout: float = Field(default=10.0, gt=0, le=600)
    worker_shutdown_grace_period: float = Field(default=30.0, ge=0)
    # Zeebe refuses commands over its maxMessageSize (4 MB by default): stay well under it.
    worker_max_result_bytes: int = Field(default=3_000_000, ge=1_000)

    # Attachments and Camunda documents (docs/contract.md §11, docs/attachments.md).
    # The Orchestration Cluster REST API (`/v2` is added unless given), as Camunda's clients take it.
    camunda_rest_address: str | None = None
    worker_max_attachment_bytes: int = Field(default=100 * 1024 * 1024, ge=1)

    # ServiceNow (docs/contract.md §7).
    servicenow_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = (
        "*.service-now.com",
        "*.servicenowservices.com",
    )
    servicenow_url_template: str = "https://{instance}.service-now.com"
    servicenow_max_limit: int = Field(default=1000, ge=1, le=10_000)
    # read with returnAll: the most records one job may gather; batch: the most requests in one
    # job (docs/contract.md §9).
    servicenow_max_records: int = Field(default=DEFAULT_SERVICENOW_MAX_RECORDS, ge=1, le=1_000_000)
    servicenow_max_batch: int = Field(default=DEFAULT_SERVICENOW_MAX_BATCH, ge=1, le=10_000)
    servicenow_connect_timeout: float = Field(default=10.0, gt=0)
    servicenow_read_timeout: float = Field(default=30.0, gt=0)
    servicenow_retry_after_cap: float = Field(default=3600.0, ge=0)
    servicenow_retry_attempts: int = Field(default=3, ge=1, le=10)
    # Flow control (docs/contract.md §12, docs/flow-control.md): requests at once per destination.
    servicenow_max_concurrency: int = Field(default=32, ge=1, le=10_000)
    # false: the limit stays at SERVICENOW_MAX_CONCURRENCY (pauses still apply).
    servicenow_adaptive_concurrency: bool = True
    # Mutual TLS to ServiceNow and the roots it is verified with (docs/authentication.md).
    servicenow_client_cert: Path | None = None
    servicenow_client_key: Path | None = None
    servicenow_client_key_password: SecretStr | None = None
    servicenow_ca_bundle: Path | None = None
    # changes (docs/contract.md §10): seconds by ServiceNow's clock a change must be old before a
    # feed hands it out; a transaction that commits later than this after its stamp can be missed.
    servicenow_changes_settle: int = Field(default=10, ge=0, le=3600)

    # Secrets (docs/contract.md §5).
    secrets_env_prefix: str = Field(default="SECRET_", min_length=1)
    secrets_dir: Path | None = None

    # Logs.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("servicenow_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(host.strip().lower() for host in value.split(",") if host.strip())
        return value

    @field_validator("servicenow_allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            if not HOST_PATTERN.match(host):
                raise ValueError(f"{host!r} is not a host name or a '*.domain' pattern")
        return hosts

    @field_validator("servicenow_url_template")
    @classmethod
    def _check_url_template(cls, template: str) -> str:
        probe = template.replace("{instance}", "instance")
        if not re.match(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$", probe):
            raise ValueError(
                "must be http(s)://host[:port], optionally with {instance} in the host, no path"
            )
        return template.rstrip("/")

    @field_validator("camunda_rest_address")
    @classmethod
    def _check_rest_address(cls, address: str | None) -> str | None:
        if address is None:
            return None
        address = address.strip().rstrip("/")
        if not re.match(r"^https?://[A-Za-z0-9.\[\]:-]+(/[A-Za-z0-9._~%/-]*)?$", address):
            raise ValueError(
                "must be http(s)://host[:port][/path], the cluster's REST address "
                "(e.g. http://localhost:8080)"
            )
        return address if re.search(r"/v2$", address) else address + "/v2"

    @field_validator("secrets_dir")
    @classmethod
    def _check_secrets_dir(cls, directory: Path | None) -> Path | None:
        if directory is not None and not directory.is_dir():
            raise ValueError(f"{directory} is not a directory")
        return directory

    @field_validator("servicenow_client_cert", "servicenow_client_key", "servicenow_ca_bundle")
    @classmethod
    def _check_readable_file(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                with path.open("rb"):
                    pass
            except OSError as error:
                raise ValueError(f"{path} is not a readable file ({error.strerror})") from None
        return path

    @model_validator(mode="after")
    def _check_servicenow_tls(self) -> Self:
        self.servicenow_tls_context()  # a certificate that does not load stops the start
        return self

    def servicenow_tls_context(self) -> ssl.SSLContext | None:
        """Client certificate and trusted roots for ServiceNow; None: httpx's default (certifi)."""
        password = self.servicenow_client_key_password
        return tls_context(
            client_cert=self.servicenow_client_cert,
            client_key=self.servicenow_client_key,
            client_key_password=password.get_secret_value() if password else None,
            ca_bundle=self.servicenow_ca_bundle,
        )

    @field_validator("zeebe_tenant_ids", mode="before")
    @classmethod
    def _split_tenants(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(tenant.strip() for tenant in value.split(",") if tenant.strip())
        return value

    @field_validator("zeebe_address")
    @classmethod
    def _check_zeebe_address(cls, address: str) -> str:
        scheme, separator, _ = address.partition("://")
        if separator and scheme.lower() not in {"http", "https", "grpc", "grpcs"}:
            raise ValueError("must be host:port, optionally after http:// or https://")
        return address

    @field_validator("zeebe_ca_certificate_path")
    @classmethod
    def _check_ca_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path} is not a file")
        return path

    @model_validator(mode="after")
    def _check_zeebe_credentials(self) -> Self:
        if (self.zeebe_client_id is None) != (self.zeebe_client_secret is None):
            raise ValueError(
                "ZEEBE_CLIENT_ID and ZEEBE_CLIENT_SECRET go together: set both or neither"
            )
        if (
            self.zeebe_client_id is not None
            and self.zeebe_authorization_server_url is None
            and self.camunda_cluster_id is None
        ):
            raise ValueError(
                "ZEEBE_AUTHORIZATION_SERVER_URL (the OAuth token URL) is needed with "
                "ZEEBE_CLIENT_ID, unless CAMUNDA_CLUSTER_ID names a SaaS cluster"
            )
        if self.camunda_cluster_id is not None and self.zeebe_client_id is None:
            raise ValueError("CAMUNDA_CLUSTER_ID needs ZEEBE_CLIENT_ID and ZEEBE_CLIENT_SECRET")
        return self

    @model_validator(mode="after")
    def _check_timeouts_fit_job_timeout(self) -> Self:
        # A job must never outlive its activation: Zeebe would hand it to another worker while this
        # one still works on it, and a create could run twice.
        worst_attempt = self.servicenow_connect_timeout + self.servicenow_read_timeout
        if worst_attempt * 2 > self.worker_job_timeout:
            raise ValueError(
                "WORKER_JOB_TIMEOUT must be at least twice SERVICENOW_CONNECT_TIMEOUT + "
                f"SERVICENOW_READ_TIMEOUT ({worst_attempt:g} s), got {self.worker_job_timeout:g} s"
            )
        return self

    @property
    def url_template_has_instance(self) -> bool:
        return "{instance}" in self.servicenow_url_template

    def secrets_from_environment(self) -> dict[str, str]:
        """The `SECRET_*` variables, by secret name, read once (the environment cannot change)."""
        prefix = self.secrets_env_prefix
        return {
            name[len(prefix) :]: value
            for name, value in os.environ.items()
            if name.startswith(prefix) and value
        }

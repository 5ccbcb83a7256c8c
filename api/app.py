"""The FastAPI application factory: the composition root that reads settings and wires storage, models and routes."""

from __future__ import annotations

import gc
import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import structlog
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine, event
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from api.auth import AuditMiddleware, AuditWriter, ensure_key
from api.deps import TRAIN_HINT, ModelState
from api.errors import BodySizeLimit, install_error_handlers
from api.limits import ConcurrencyLimiter, ShedEarly, run_heavy_in_own_pool, shed_first, start_heavy_pool
from api.metrics import LatencyMiddleware, Metrics
from api.responses import install_contract
from api.retrain import RetrainManager, watch_live_models
from api.settings import Settings, get_settings
from core.errors import DeskpilotError, ModelArtifactError, ModelNotReady
from routing.models import DecisionThresholds, TicketIn, utcnow

if TYPE_CHECKING:  # the triage module loads the model stack; it is imported when models load, not with the app
    from routing.service import DecideBatchFn, DecideFn
    from routing.triage import ModelBundle

log = structlog.get_logger(__name__)

# (settings, routing embedder) -> the live models; raises a DeskpilotError (ModelNotReady ...) when there are none.
BundleLoader = Callable[[Settings, Any], "ModelBundle | None"]

API_DESCRIPTION = """deskpilot routes new support tickets (intent, team, risks, a decision and its reasons), keeps the
live event log, re-triages when a customer message changes the intent, records agent feedback, assists agents (next-best
actions ranked by their expected effect, articles, a grounded draft), serves the knowledge hub and the mined insight,
and retrains its models from its own data (`POST /v1/models/retrain`: agents' corrections become labels), swapping a
retrained model in only when it is not worse than the live one on the newest cases (rollback:
`POST /v1/models/{task}/rollback`). Authenticate with `Authorization: Bearer <key>` (create keys with `deskpilot keys create --role ROLE --name
NAME`). Every error has the body `{"detail", "code"}`; heavy endpoints (assist, knowledge gaps) answer 503
`overloaded` with a `Retry-After` header when at capacity instead of queueing without bound."""


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout: float = 30.0) -> Engine:
    """SQLAlchemy engine for SQLite (file or in-memory) or PostgreSQL, tuned for a threaded web server."""
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # In-memory SQLite lives in one connection: share it, or each thread would see an empty database.
            poolclass=StaticPool if memory else None,
            **({} if memory else pool),
        )
        if not memory:
            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                # WAL lets readers run while one writer commits; NORMAL sync is durable across app crashes.
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def _import_tables() -> None:
    # Table classes must be imported before create_all; knowledge_hub is optional until it lands.
    importlib.import_module("routing.models")
    importlib.import_module("api.auth")
    importlib.import_module("api.web.accounts")
    importlib.import_module("api.webhooks")
    with suppress(ImportError):
        importlib.import_module("knowledge_hub.models")


def default_bundle_loader(settings: Settings, embedder: Any) -> ModelBundle:
    """`routing.triage.load_bundle(registry_path, embedder)`; ModelNotReady when triage is not installed."""
    try:
        triage = importlib.import_module("routing.triage")
    except ImportError as exc:
        raise ModelNotReady(f"routing.triage is not installed ({exc})") from exc
    bundle: ModelBundle = triage.load_bundle(settings.registry_path, embedder)
    bundle.memory_refresh_seconds = settings.router_memory_refresh_seconds
    return bundle


def prime_router_memory(engine: Engine, bundle: ModelBundle | None) -> None:
    """Apply the stored live resolutions to a freshly loaded bundle's router (nothing for other bundles).

    A model swap thereby rebuilds the memory: the new model's fitted memory plus the resolutions stored after its
    training window (routing.live_memory). A database error leaves the fitted memory; routing retries later.
    """
    if bundle is None:
        return
    try:
        from routing.live_memory import sync_router_memory
    except ImportError:
        return
    try:
        n = sync_router_memory(engine, bundle, force=True)
    except Exception as exc:  # the service must come up even if this read fails; the next route retries it
        log.warning("router_memory_not_primed", error=f"{type(exc).__name__}: {exc}")
        return
    if n:
        log.info("router_memory_primed", resolutions=n)


def limit_blas_threads(threads: int | None) -> Any:
    """Cap numpy / scipy's BLAS threads for this process (None: leave them); returns what restores the old limits."""
    if threads is None:
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def settle_heap() -> None:
    """Collect, then freeze what is alive (models, libraries) out of the garbage collector's future scans.

    A full collection walks every object of a loaded service (models and libraries) with every thread stopped, a
    periodic stall that set the routing p99 (docs/PERFORMANCE.md, "Service and API"). Called after start-up and after a model swap (unfreezing first, so
    a swapped-out bundle can still be collected once nothing uses it).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _missing_decide(*, bundle: ModelBundle, ticket: TicketIn, thresholds: DecisionThresholds) -> NoReturn:
    raise ModelNotReady("routing.triage is not installed; nothing can be routed; run `deskpilot train`")


def _resolve_decide() -> tuple[DecideFn, DecideBatchFn | None]:
    try:
        triage = importlib.import_module("routing.triage")
    except ImportError:
        return _missing_decide, None
    return triage.decide, getattr(triage, "decide_batch", None)


def bundle_versions(bundle: ModelBundle | None) -> dict[str, str]:
    """Model versions a bundle reports ({task: version}; none without a bundle)."""
    if bundle is None:
        return {}
    return {str(k): str(v) for k, v in bundle.versions.items()}


def load_step_outcomes(settings: Settings) -> tuple[Any, dict[str, str], str | None]:
    """The live step-outcome table from the registry: (table or None, {task: version}, why it is absent)."""
    from assist.actions import TASK_STEP_OUTCOMES
    from assist.actions import load_step_outcomes as load

    try:
        found = load(settings.registry_path)
    except DeskpilotError as exc:
        log.warning("step_outcomes_not_loaded", code=exc.code, detail=exc.message)
        return None, {}, exc.message
    if found is None:
        return None, {}, f"no {TASK_STEP_OUTCOMES} in the registry; {TRAIN_HINT}"
    table, version = found
    return table, {TASK_STEP_OUTCOMES: version}, None


def probe_ticket() -> TicketIn:
    """The ticket a freshly loaded model set must triage before it serves: every field the models read, filled."""
    return TicketIn(ticket_id="deskpilot-load-probe", subject="Load check", body="A ticket routed once when models load.",
                    channel="email", segment="probe", priority="normal", custom_fields={"probe field": "probe value"},
                    created_at=utcnow())


def load_models(settings: Settings, embedder: Any, loader: BundleLoader, decide: DecideFn | None = None
                ) -> ModelState:
    """Load the triage bundle and the step outcomes; never raises for domain errors: the state records why.

    With `decide`, the loaded bundle must triage `probe_ticket()` first: models that load but cannot predict
    together (a registry mixing versions whose inputs disagree) are refused here, so a reload keeps the old ones
    serving and a start answers 503 naming the error, instead of every ticket answering 500."""
    outcomes, outcome_version, outcomes_error = load_step_outcomes(settings)
    extra = {"outcomes": outcomes, "outcomes_error": outcomes_error}
    try:
        bundle = loader(settings, embedder)
    except DeskpilotError as exc:
        log.warning("models_not_loaded", code=exc.code, detail=exc.message)
        return ModelState(bundle=None, error=exc, versions=outcome_version, **extra)
    if bundle is None:
        return ModelState(bundle=None, error=ModelNotReady("the model loader returned nothing"),
                          versions=outcome_version, **extra)
    versions = {**bundle_versions(bundle), **outcome_version}
    if decide is not None:
        try:
            decide(bundle=bundle, ticket=probe_ticket(), thresholds=DecisionThresholds())
        except DeskpilotError:
            pass  # a set that does not route (no intent or team model) answers that itself, with its own status
        except Exception as exc:  # any other failure here would be every request's 500: refuse the set, say why
            error = ModelArtifactError(f"the models {versions} loaded but failed to triage a test ticket "
                                       f"({type(exc).__name__}: {str(exc)[:300]}); retrain, or roll back the task "
                                       "that changed last")
            log.error("models_failed_probe", versions=versions, error=f"{type(exc).__name__}: {exc}")
            return ModelState(bundle=None, error=error, versions=outcome_version, **extra)
    return ModelState(bundle=bundle, versions=versions, loaded_at=utcnow(), **extra)


def _open_kb_index(settings: Settings, embedder: Any) -> Any:
    """The knowledge-hub vector index (embedded chroma at settings.chroma_path, or a chroma server by URL)."""
    index_mod = importlib.import_module("knowledge_hub.index")
    opener = getattr(index_mod, "open_index", None)
    if opener is not None:
        return opener(settings=settings, embedder=embedder, role="server")  # held by this process while it runs
    cls = index_mod.KnowledgeIndex
    if settings.chroma_url:
        return cls.from_url(settings.chroma_url, embedder=embedder)
    return cls.from_path(settings.chroma_path, embedder=embedder)


def _repair_kb_index(engine: Engine, index: Any) -> None:
    """Bring the index in line with SQL at start-up (writes that failed or were cut off while the service was down)."""
    try:
        from knowledge_hub.consistency import check, repair
    except ImportError:
        return
    with Session(engine, expire_on_commit=False) as session:
        report = check(session=session, index=index)
        if report.ok:
            return
        result = repair(session=session, index=index)
    log.info("kb_index_repaired", reindexed=len(result.reindexed), removed=len(result.removed),
             failed=len(result.failed), full_reindex=result.full_reindex)


async def _open_kb_index_when_free(app: FastAPI, opener: Callable[[Settings, Any], Any]) -> None:
    """Retry opening an embedded index another process holds (a `deskpilot kb` command) until it lets go."""
    while app.state.kb_index is None:
        await anyio.sleep(1.0)
        try:
            index = await anyio.to_thread.run_sync(opener, app.state.settings, app.state.kb_embedder)
            if index is not None:
                await anyio.to_thread.run_sync(_repair_kb_index, app.state.engine, index)
        except Exception as exc:  # still held, or chroma failing: say why, try again
            app.state.kb_index_error = f"{type(exc).__name__}: {exc}"
            continue
        app.state.kb_index, app.state.kb_index_error = index, None
        log.info("kb_index_opened", after_wait=True)


def _bind_home(engine: Engine, settings: Settings) -> None:
    """A home refuses a second database (knowledge_hub.identity): its index was built from the first one."""
    try:
        from knowledge_hub.identity import bind_home
    except ImportError:
        return
    bind_home(engine=engine, home=settings.home)


async def reload_models(app: FastAPI) -> tuple[ModelState, ModelState]:
    """Load the live models again and swap them in atomically; a failed load keeps the old ones serving.

    Returns (old, new-or-attempted). In-flight requests keep the snapshot they started with.
    """
    async with app.state.reload_lock:
        old: ModelState = app.state.models
        new = await anyio.to_thread.run_sync(
            load_models, app.state.settings, app.state.embedder, app.state.bundle_loader, app.state.decide
        )
        if new.ready:
            await anyio.to_thread.run_sync(prime_router_memory, app.state.engine, new.bundle)
            app.state.models = new  # one attribute assignment: readers see either the old or the new snapshot
            settle_heap()
            app.state.metrics.set_models(new.versions, True)
            app.state.metrics.reloads.labels(outcome="swapped").inc()
        else:
            app.state.metrics.reloads.labels(outcome="failed").inc()
        return old, new


def _include_views(app: FastAPI) -> None:
    # Every module in api/views with a `router` is mounted: adding an area (e.g. assist) is one new file.
    import api.views as views

    for info in sorted(pkgutil.iter_modules(views.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"api.views.{info.name}")
        router = getattr(module, "router", None)
        if router is not None:
            app.include_router(router)


def create_app(
    settings: Settings | None = None,
    *,
    bundle_loader: BundleLoader | None = None,
    decide: DecideFn | None = None,
    decide_batch: DecideBatchFn | None = None,
    open_kb_index: Callable[[Settings, Any], Any] | None = None,
    embedder: Any = None,
    kb_embedder: Any = None,
) -> FastAPI:
    """Build the app; nothing heavy happens until the lifespan starts (engine, tables, index, models).

    `embedder` serves routing; `kb_embedder` the knowledge hub (default: `settings.kb_embedding_model_path`, the
    routing embedder itself when that is the same folder); `open_kb_index(settings, kb_embedder)` opens the index."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from core.embedding import Embedder
        from insight.eventlog.privacy import name_model

        if settings.database_url is None or settings.chroma_url is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                             pool_timeout=settings.db_pool_timeout)
        _import_tables()
        SQLModel.metadata.create_all(engine)
        with suppress(ImportError):
            importlib.import_module("knowledge_hub.review").upgrade_schema(engine)
        try:
            _bind_home(engine, settings)
        except BaseException:
            engine.dispose()
            raise
        app.state.engine = engine
        app.state.retrain.bind(engine, settings.registry_path)  # retrain jobs live in the database
        app.state.audit_writer = AuditWriter(engine)
        app.state.reload_lock = anyio.Lock()
        heavy_pool = start_heavy_pool(threads=settings.heavy_threads, nice=settings.heavy_nice)
        if settings.bootstrap_admin_key is not None:
            with Session(engine) as session:
                ensure_key(session=session, name="bootstrap-admin", role="admin",
                           secret=settings.bootstrap_admin_key.get_secret_value())
        # The embedder object is cheap; its weights load on first encode.
        app.state.embedder = embedder if embedder is not None else Embedder(settings.embedding_model_path, **settings.embedder_kwargs)
        if decide is None:
            app.state.decide, app.state.decide_batch = _resolve_decide()
        else:
            app.state.decide, app.state.decide_batch = decide, decide_batch
        app.state.kb_index, app.state.kb_index_error, app.state.kb_retriever = None, None, None
        app.state.kb_embedder = kb_embedder
        try:
            if app.state.kb_embedder is None:  # the knowledge hub's own model (knowledge_hub.index.kb_embedder)
                app.state.kb_embedder = importlib.import_module("knowledge_hub.index").kb_embedder(
                    settings, shared=app.state.embedder)
            opener = open_kb_index or _open_kb_index
            app.state.kb_index = await anyio.to_thread.run_sync(opener, settings, app.state.kb_embedder)
            if app.state.kb_index is not None:
                await anyio.to_thread.run_sync(_repair_kb_index, engine, app.state.kb_index)
        except (ImportError, AttributeError) as exc:
            app.state.kb_index_error = f"knowledge_hub index module unavailable ({exc})"
        except Exception as exc:  # chroma raises many types when a server is down; the API still serves routing
            app.state.kb_index_error = f"{type(exc).__name__}: {exc}"
            log.warning("kb_index_unavailable", error=app.state.kb_index_error)
        # Held by a `deskpilot kb` command right now: opened as soon as it lets go.
        kb_index_busy = app.state.kb_index is None and "IndexBusy" in str(app.state.kb_index_error)
        app.state.bundle_loader = bundle_loader or default_bundle_loader
        app.state.models = await anyio.to_thread.run_sync(
            load_models, settings, app.state.embedder, app.state.bundle_loader, app.state.decide
        )
        if app.state.models.ready:
            await anyio.to_thread.run_sync(prime_router_memory, engine, app.state.models.bundle)
        if not settings.store_raw_text:
            # loaded here so that the first ticket does not wait for the name model of the redaction at the door
            await anyio.to_thread.run_sync(name_model)
        metrics.set_models(app.state.models.versions, app.state.models.ready)
        log.info("service_started", db=engine.url.render_as_string(hide_password=True),
                 models_ready=app.state.models.ready, versions=app.state.models.versions,
                 kb_index=app.state.kb_index is not None)
        # Each request computes on its own thread: a shared multi-threaded BLAS pool serialised them (see Settings).
        blas_limits = limit_blas_threads(settings.blas_threads)
        settle_heap()
        from api.webhooks import start_worker

        app.state.webhooks = start_worker(engine, settings)  # the durable outbox's delivery thread
        from api.live_insight import LiveInsight, LiveScheduler

        app.state.live_insight = LiveInsight(engine, settings)
        live_schedule = (LiveScheduler(app.state.live_insight, settings.live_insight_seconds).start()
                         if settings.live_insight_seconds > 0 and engine.url.database not in (None, "", ":memory:")
                         else None)
        try:
            # Background jobs (retraining) run in this task group; shutting down cancels them and waits for them.
            async with anyio.create_task_group() as tasks:
                app.state.task_group = tasks
                tasks.start_soon(watch_live_models, app, reload_models)  # follow swaps made by other workers
                if kb_index_busy:
                    tasks.start_soon(_open_kb_index_when_free, app, open_kb_index or _open_kb_index)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            if getattr(app.state, "webhooks", None) is not None:
                app.state.webhooks.close()
            if live_schedule is not None:
                live_schedule.close()
            app.state.audit_writer.close()
            heavy_pool.shutdown(wait=False, cancel_futures=True)
            if app.state.kb_index is not None and hasattr(app.state.kb_index, "close"):
                app.state.kb_index.close()  # another process (a `deskpilot kb` command) may open it now
            engine.dispose()
            if blas_limits is not None:
                blas_limits.restore_original_limits()
            gc.unfreeze()

    # /docs and /redoc from assets inside the installed fastapi-offline package: nothing is fetched from a CDN.
    app = FastAPIOffline(title="deskpilot", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan,
                         static_url="/static/api-docs")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = ModelState(bundle=None, error=ModelNotReady("the service is starting"))
    app.state.engine = None
    app.state.audit_writer = None
    app.state.retrain = RetrainManager()
    app.state.heavy_limiter = ConcurrencyLimiter(capacity=settings.heavy_max_concurrency,
                                                 max_waiting=settings.heavy_max_waiting,
                                                 max_wait_seconds=settings.heavy_max_wait_seconds)
    app.state.route_limiter = ConcurrencyLimiter(capacity=settings.route_max_concurrency,
                                                 max_waiting=settings.route_max_waiting,
                                                 max_wait_seconds=settings.route_max_wait_seconds)
    install_error_handlers(app)
    _include_views(app)
    install_contract(app)  # every status and Allow header the routes send, stated in the OpenAPI schema
    from api.web import mount as mount_web_app

    mount_web_app(app)  # the web pages (api/web): same process, port and services; not in the OpenAPI schema
    run_heavy_in_own_pool(app.routes)  # assist, gaps and index writes compute on threads of their own
    shed_first(app.routes)  # under overload a refusal is decided before the key lookup or any database work
    # Added last = outermost: latency covers everything, the audit sees refusals, overload is refused before the
    # body is read, the size check runs first on what is let through.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, upload_paths=("/analyst/upload",),
                       upload_max_bytes=settings.web_upload_max_bytes)
    app.add_middleware(ShedEarly)
    app.add_middleware(AuditMiddleware, get_writer=lambda: app.state.audit_writer)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app

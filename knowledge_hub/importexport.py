"""Bulk import and export of articles: a folder of Markdown files with front matter, JSON, CSV, ABCD guidelines."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter
from pydantic import ValidationError
from sqlmodel import Session

from core.errors import InvalidInput
from knowledge_hub import service
from knowledge_hub.models import Article, ArticleCreate, ArticleStatus
from knowledge_hub.service import ArticleIndex

LIST_FIELDS = ("tags", "intents", "activities")
CSV_COLUMNS = ("title", "body", "tags", "intents", "activities", "status", "author")


@dataclass
class ImportResult:
    """What an import stored."""

    source: str
    created: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)  # stored, but the index write failed (repair fixes)


def slug(text: str) -> str:
    """Lower-case, underscore-separated identifier (e.g. 'Initiate Refund' -> 'initiate_refund')."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _as_list(value: Any, *, where: str, name: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in re.split(r"[;,]", value) if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    raise InvalidInput(f"{where}: field {name!r} must be a list or a ';'-separated string", field=name)


def _to_create(record: dict[str, Any], *, where: str) -> tuple[ArticleCreate, str | None]:
    rec = dict(record)
    for name in LIST_FIELDS:
        rec[name] = _as_list(rec.get(name), where=where, name=name)
    author = rec.pop("author", None)
    rec.setdefault("status", ArticleStatus.draft.value)
    if not rec.get("status"):
        rec["status"] = ArticleStatus.draft.value
    keep = {k: rec[k] for k in ("title", "body", "status", *LIST_FIELDS) if k in rec}
    try:
        return ArticleCreate.model_validate(keep), (str(author) if author else None)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: field {name!r}: {first['msg']}", field=name) from exc


def read_markdown_folder(path: Path) -> list[tuple[ArticleCreate, str | None]]:
    """One article per *.md file: front matter holds title/tags/intents/activities/status/author, content is the body."""
    files = sorted(path.rglob("*.md"))
    if not files:
        raise InvalidInput(f"no *.md files under {path}", field="path")
    return [_md_file(f, default_title=f.stem.replace("-", " ").replace("_", " ")) for f in files]


def _text(path: Path) -> str:
    """The file as UTF-8 text, or an error naming the file and the first byte that is not."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"file {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                           "is it a binary file?", field="path") from exc
    except OSError as exc:
        raise InvalidInput(f"file {path}: cannot be read ({exc.strerror or exc})", field="path") from exc


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"file {path}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})",
                           field="path") from exc


def read_json(path: Path, data: Any = None) -> list[tuple[ArticleCreate, str | None]]:
    """A JSON list of article objects (or {"articles": [...]}); `data` is the file already parsed, if it was."""
    if data is None:
        data = _load_json(path)
    if isinstance(data, dict):
        data = data.get("articles")
    if not isinstance(data, list):
        raise InvalidInput(f"file {path}: expected a list of articles (or {{\"articles\": [...]}})", field="path")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise InvalidInput(f"file {path}, item {i}: expected an article object, got {type(rec).__name__}",
                               field="path")
        out.append(_to_create(rec, where=f"file {path}, item {i}"))
    return out


def read_csv(path: Path) -> list[tuple[ArticleCreate, str | None]]:
    """CSV with a header (title, body, tags, intents, activities, status, author); lists are ';'-separated."""
    reader = csv.DictReader(io.StringIO(_text(path), newline=""))
    try:
        if not reader.fieldnames or "title" not in reader.fieldnames:
            raise InvalidInput(f"file {path}: CSV needs a 'title' column", field="title")
        return [_to_create(dict(row), where=f"file {path}, row {i + 2}") for i, row in enumerate(reader)]
    except csv.Error as exc:
        raise InvalidInput(f"file {path}, line {reader.line_num}: cannot parse CSV ({exc})", field="path") from exc


def read_abcd_guidelines(path: Path, data: Any = None) -> list[tuple[ArticleCreate, str | None]]:
    """ABCD agent guidelines: each flow/subflow becomes a published article listing its ordered actions."""
    if data is None:
        data = _load_json(path)
    if not isinstance(data, dict):
        raise InvalidInput(f"file {path}: ABCD guidelines are an object of flows", field="path")
    out: list[tuple[ArticleCreate, str | None]] = []
    for flow, fv in data.items():
        try:
            out += _abcd_flow(flow, fv)
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidInput(f"file {path}, flow {flow!r}: unexpected shape ({exc})", field="path") from exc
    return out


def _abcd_flow(flow: str, fv: dict[str, Any]) -> list[tuple[ArticleCreate, str | None]]:
    out: list[tuple[ArticleCreate, str | None]] = []
    for sub, sv in fv.get("subflows", {}).items():
        lines = [f"Flow: {flow} ({fv.get('description', '')}). Subflow: {sub}.", ""]
        lines += [str(t) for t in sv.get("instructions", []) if t]
        lines += ["", "## Actions", ""]
        buttons: list[str] = []
        for n, act in enumerate(sv.get("actions", []), start=1):
            button = str(act.get("button") or "").strip()
            if button:
                buttons.append(button)
            lines.append(f"{n}. **{button or act.get('type', 'step')}**: {str(act.get('text', '')).strip()}")
            lines += [f"   - {str(s).strip()}" for s in act.get("subtext", []) if str(s).strip()]
        article = ArticleCreate(
            title=f"{flow}: {sub}",
            body="\n".join(lines).strip(),
            tags=["abcd", slug(flow)],
            intents=[slug(flow), slug(sub)],
            activities=buttons,
            status=ArticleStatus.published,
        )
        out.append((article, "abcd-guidelines"))
    return out


def read_any(path: Path) -> list[tuple[ArticleCreate, str | None]]:
    """Pick the reader from the path: folder -> Markdown, *.json (ABCD guidelines detected), *.csv."""
    if path.is_dir():
        return read_markdown_folder(path)
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist", field="path")
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    if path.suffix.lower() == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and data and all(isinstance(v, dict) and "subflows" in v for v in data.values()):
            return read_abcd_guidelines(path, data)
        return read_json(path, data)
    if path.suffix.lower() == ".md":
        return [_md_file(path)]
    raise InvalidInput(f"{path}: unsupported format (folder of .md, .json or .csv)", field="path")


def _md_file(path: Path, *, default_title: str | None = None) -> tuple[ArticleCreate, str | None]:
    """One Markdown file: front matter holds the fields, the content is the body; no title -> `default_title`."""
    try:
        post = frontmatter.loads(_text(path))
    except InvalidInput:
        raise
    except Exception as exc:  # the YAML parser raises its own error types for broken front matter
        raise InvalidInput(f"file {path}: broken front matter ({type(exc).__name__}: {exc})", field="path") from exc
    rec = dict(post.metadata)
    rec.setdefault("title", default_title or path.stem)
    rec["body"] = post.content
    return _to_create(rec, where=f"file {path}")


def import_path(*, session: Session, index: ArticleIndex, path: Path, author: str = "import",
                records: list[tuple[ArticleCreate, str | None]] | None = None,
                progress: Callable[[int], None] | None = None) -> ImportResult:
    """Read every article from path (all validated before anything is stored) and create them.

    `records` are the articles already read from `path` with `read_any` (so a caller can check the file first);
    `progress(n)` is told as each group of n published articles is indexed."""
    if records is None:
        records = read_any(path)
    result = ImportResult(source=str(path))
    batch = [(article_in, rec_author or author) for article_in, rec_author in records]
    for a in service.bulk_create(session=session, index=index, articles_in=batch, progress=progress):
        assert a.id is not None
        result.created.append(a.id)
        if a.index_stale:
            result.stale.append(a.id)
    return result


def _record(a: Article) -> dict[str, Any]:
    return {"id": a.id, "title": a.title, "body": a.body, "tags": list(a.tags), "intents": list(a.intents),
            "activities": list(a.activities), "status": str(a.status), "author": a.author, "version": a.version}


def export_markdown(articles: list[Article], folder: Path) -> list[Path]:
    """Write one `<id>-<slug>.md` file per article, metadata in front matter."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for a in articles:
        rec = _record(a)
        body = rec.pop("body")
        post = frontmatter.Post(body, **rec)
        p = folder / f"{a.id:05d}-{slug(a.title)[:60] or 'article'}.md"
        p.write_text(frontmatter.dumps(post) + "\n", encoding="utf-8")
        out.append(p)
    return out


def export_json(articles: list[Article], path: Path) -> Path:
    """Write a JSON list of articles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([_record(a) for a in articles], indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def export_csv(articles: list[Article], path: Path) -> Path:
    """Write a CSV (lists ';'-separated) that read_csv reads back."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
    w.writeheader()
    for a in articles:
        rec = _record(a)
        w.writerow({k: ";".join(rec[k]) if k in LIST_FIELDS else rec[k] for k in CSV_COLUMNS})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def export_all(*, session: Session, folder: Path) -> dict[str, Path]:
    """Export every article as Markdown files (folder/markdown), articles.json and articles.csv."""
    articles = service.list_articles(session=session, limit=10**9)
    export_markdown(articles, folder / "markdown")
    return {"markdown": folder / "markdown", "json": export_json(articles, folder / "articles.json"),
            "csv": export_csv(articles, folder / "articles.csv")}

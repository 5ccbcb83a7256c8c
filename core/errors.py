"""Domain errors for every deskpilot package; `api/` maps each `code` to an HTTP status."""

from __future__ import annotations

from typing import Any


class DeskpilotError(Exception):
    """Base of all deskpilot domain errors; carries a stable machine-readable code."""

    code = "deskpilot_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        return self.message


class InvalidInput(DeskpilotError):
    """A caller passed something that cannot be used (names the field)."""

    code = "invalid_input"


class InvalidEventLog(InvalidInput):
    """An event log cannot be read or lacks what a log needs; names file, row and column."""

    code = "invalid_event_log"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"column {column!r}" if column else "",
            )
            if part
        )
        super().__init__(f"{message} ({where})" if where else message, file=file, row=row, column=column)
        self.file = file
        self.row = row
        self.column = column


class NotFound(DeskpilotError):
    """The named object does not exist."""

    code = "not_found"


class Conflict(DeskpilotError):
    """The request conflicts with what is stored (e.g. a stale version)."""

    code = "conflict"


class ModelNotReady(DeskpilotError):
    """No trained model is available for the requested task; says how to train one."""

    code = "model_not_ready"


class ModelArtifactError(DeskpilotError):
    """A model artifact is broken, incomplete or was written by incompatible library versions."""

    code = "model_artifact_error"


class IndexUnavailable(DeskpilotError):
    """The vector index could not be reached or written."""

    code = "index_unavailable"

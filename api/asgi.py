"""What the ASGI middlewares share: seeing the status of the response an app sends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Message, Send


class ResponseStatus:
    """Wraps `send`: records the status of the response when it starts (None until then) and awaits
    `on_start(status)` once, before the start message goes out."""

    def __init__(self, send: Send, on_start: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._send = send
        self._on_start = on_start
        self.status: int | None = None

    @property
    def started(self) -> bool:
        """True once the response has started (its status is known)."""
        return self.status is not None

    async def send(self, message: Message) -> None:
        """The `send` to hand the wrapped app."""
        if message["type"] == "http.response.start" and self.status is None:
            self.status = int(message["status"])
            if self._on_start is not None:
                await self._on_start(self.status)
        await self._send(message)

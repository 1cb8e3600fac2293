"""What the emulator's APIs share: an error answer raised from deep inside a request."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """Answer `status` with ServiceNow's error envelope (`error.message`, `error.detail`)."""

    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail

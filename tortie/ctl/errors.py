"""The error tortiectl reports to the user: a message and an exit code, never a traceback."""

from __future__ import annotations


class CtlError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code

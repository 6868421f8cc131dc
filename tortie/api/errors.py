"""Validation errors for the resource API: every problem names its field path and reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field, e.g. ``spec.ingress[0].destination.ports[1]``."""

    path: str
    reason: str
    document: int | None = None  # 1-based position in a multi-document input

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        prefix = f"document {self.document}: " if self.document is not None else ""
        return f"{prefix}{where}{self.reason}"


class ValidationError(ValueError):
    """Raised when input is not a valid resource; ``errors`` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors) or "invalid resource")

    @classmethod
    def single(cls, path: str, reason: str) -> ValidationError:
        return cls([FieldError(path, reason)])

    def in_document(self, document: int) -> ValidationError:
        """The same errors, tagged with their document number in a multi-document input."""
        return ValidationError(
            [FieldError(e.path, e.reason, document) for e in self.errors]
        )

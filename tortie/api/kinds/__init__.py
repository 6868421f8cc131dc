"""Every resource kind; importing this package registers them all."""

from tortie.api.kinds import tier  # noqa: F401

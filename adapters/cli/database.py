"""The CLI's way to the database: the storage layer's, named here for the commands."""

from __future__ import annotations

from adapters.storage.database import database_url, open_pool

__all__ = ["database_url", "open_pool"]

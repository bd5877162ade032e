"""Read models kept by projections, and the runner that feeds them from the log."""

from __future__ import annotations

from adapters.storage.read_models.base import Projection
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.reconciliation import ReconciliationProjection
from adapters.storage.read_models.subjects_view import SubjectsView


def all_projections() -> list[Projection]:
    """A fresh instance of every projection (each keeps its own in-memory cache)."""
    return [SubjectsView(), JournalProjection(), ReconciliationProjection()]

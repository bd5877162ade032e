"""The app's typed keys: everything the composition root (`init_app`) puts in the application,
in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from adapters.audit.checkpoints import Checkpointer
from adapters.config import Settings
from adapters.ingestion.applier import DeliveryApplier
from adapters.ingestion.receipt import DeliveryReceipt
from adapters.observability.metrics import LedgerMetrics
from adapters.providers.contract import ProviderAdapter
from adapters.services.balances import BalancePoller
from adapters.services.payments import PaymentService
from adapters.services.provider_queries import ProviderQueries
from adapters.services.recovery import SubmissionRecovery
from adapters.services.sweeper import ClockSweeper
from adapters.services.withdrawals import WithdrawalService
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.read_models.runner import ProjectionRunner

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", LedgerMetrics)
OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict[str, Any])
STORE = web.AppKey("store", PostgresEventStore)
ADAPTERS = web.AppKey("adapters", Mapping[str, ProviderAdapter])
RUNNER = web.AppKey("projection_runner", ProjectionRunner)
RECEIPT = web.AppKey("receipt", DeliveryReceipt)
APPLIER = web.AppKey("applier", DeliveryApplier)
PAYMENTS = web.AppKey("payments", PaymentService)
WITHDRAWALS = web.AppKey("withdrawals", WithdrawalService)
RECOVERY = web.AppKey("recovery", SubmissionRecovery)
QUERIES = web.AppKey("provider_queries", ProviderQueries)
SWEEPER = web.AppKey("clock_sweeper", ClockSweeper)
POLLER = web.AppKey("balance_poller", BalancePoller)
CHECKPOINTER = web.AppKey("audit_checkpointer", Checkpointer)
REQUEST_ID = web.RequestKey("request_id", str)

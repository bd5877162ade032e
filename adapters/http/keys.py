"""The app's typed keys: what the composition root (`init_app`) puts in the application."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from adapters.audit.checkpoints import Checkpointer
from adapters.observability.metrics import LedgerMetrics
from adapters.providers.contract import ProviderAdapter
from adapters.services.ingestion import WebhookIngestion
from adapters.services.payments import PaymentService
from adapters.services.provider_queries import ProviderQueries
from adapters.services.recovery import SubmissionRecovery
from adapters.services.withdrawals import WithdrawalService
from adapters.storage.postgres_store import PostgresEventStore

STORE = web.AppKey("store", PostgresEventStore)
INGESTION = web.AppKey("ingestion", WebhookIngestion)
PAYMENTS = web.AppKey("payments", PaymentService)
WITHDRAWALS = web.AppKey("withdrawals", WithdrawalService)
RECOVERY = web.AppKey("recovery", SubmissionRecovery)
QUERIES = web.AppKey("provider_queries", ProviderQueries)
ADAPTERS = web.AppKey("adapters", Mapping[str, ProviderAdapter])
CHECKPOINTER = web.AppKey("audit_checkpointer", Checkpointer)
REQUEST_ID = web.RequestKey("request_id", str)
METRICS = web.AppKey("metrics", LedgerMetrics)

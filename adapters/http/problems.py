"""RFC 9457 problem details."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_BASE = "https://ledger.example/problems/"


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    slug = title.lower().replace(" ", "-")
    if extra.get("code"):
        slug = str(extra["code"]).replace("_", "-")
    body = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return web.Response(
        status=status, text=json.dumps(body, default=str), content_type="application/problem+json"
    )

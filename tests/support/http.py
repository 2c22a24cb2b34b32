"""Helpers for tests that talk to a real server over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy.engine import Engine


@dataclass
class Gateway:
    url: str
    engine: Engine
    operator: httpx.Client
    anonymous: httpx.Client

    def client_with(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

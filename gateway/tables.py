"""Imports every module that defines tables, so that ``SQLModel.metadata`` is complete.

Only the migration environment and schema tests import this.
"""

from gateway import auth, leases
from gateway.collateral import store as collateral_store
from gateway.ledger import store as ledger_store
from gateway.messaging import outbox
from gateway.pvp import store as pvp_store
from gateway.stablecoin import endpoints_store as webhook_store
from gateway.stablecoin import store as stablecoin_store

__all__ = [
    "auth",
    "collateral_store",
    "leases",
    "ledger_store",
    "outbox",
    "pvp_store",
    "stablecoin_store",
    "webhook_store",
]

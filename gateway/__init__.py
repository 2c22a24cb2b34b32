"""DT Gateway: the Digital Tenge operator's edge service.

Cross-border PvP over ISO 20022, a reserve-guarded stablecoin, and public proof of collateral.
"""

__version__ = "0.1.0"

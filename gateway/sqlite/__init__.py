"""The embedded database: one SQLite engine design for both parties (the gateway and the
connector mock), group commit of the write-ahead log (``walsync``) and the raw-cursor fast path
(``fastsql``). Below ``gateway.db``; knows nothing of any table."""

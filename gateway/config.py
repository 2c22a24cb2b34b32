"""Typed settings, read once at start and passed down.

Sources, later ones winning: embedded defaults, an optional TOML file (``--config PATH`` or
``DT_GATEWAY_CONFIG``), then environment variables ``DT_GATEWAY_<SECTION>__<FIELD>``
(e.g. ``DT_GATEWAY_DATABASE__URL``). Every setting has a default, so the gateway runs with no
configuration at all. Secrets are ``SecretStr``: they never appear in logs or reprs.

No other module reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.config_ops import KeySettings, MetricsSettings, RateLimitSettings, ReadinessSettings
from gateway.cpus import parse_cpu_list

ENV_PREFIX = "DT_GATEWAY_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _cpu_list(value: str | None) -> str | None:
    """Validate a ``cpus`` setting (a Linux CPU list such as ``1``, ``0-3``) at load time."""
    if value is not None:
        parse_cpu_list(value)
    return value


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/dt-gateway.db"
    """SQLAlchemy URL. ``sqlite:///path`` or ``postgresql+psycopg://user@host/db``."""
    pool_size: int = 10
    sqlite_busy_timeout_ms: int = 5000
    check_schema: bool = True
    """Refuse to start when the schema is not at the newest migration."""


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"


class LedgerSettings(_Section):
    currency: str = "KZT"
    history_page_max: int = 500
    batch_max_operations: int = 1000
    expiry_sweep_seconds: float = 1.0


class Iso20022Settings(_Section):
    max_message_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_transactions: int = 1000
    max_clock_skew_seconds: int = 300
    """How far in the future a message's creation date-time may be (clock skew)."""
    max_settlement_days: int = 30
    """How far after its creation date an instruction's settlement date may be."""
    signing_key_pem: SecretStr | None = None
    """PEM private key the gateway signs its business application headers with."""
    signing_cert_pem: str | None = None
    connector_cert_pem: str | None = None
    """The connector's certificate, pinned: inbound messages must verify against it."""


class ConnectorSettings(_Section):
    url: str = "http://127.0.0.1:8090"
    host: str = "127.0.0.1"
    port: int = 8090
    database_url: str = "sqlite:///var/connector.db"
    gateway_bic: str = "NBKZKZKAXXX"
    bic: str = "SWHQBEBBXXX"
    """The connector's own BIC (AppHdr/Fr of everything it sends)."""
    signing_key_pem: SecretStr | None = None
    """PEM key the connector signs with. None: a dev key + self-signed certificate are made
    under ``<data_dir>/connector/`` on first start (``GET /v1/certificate`` shows the cert)."""
    signing_cert_pem: str | None = None
    gateway_endpoint: str | None = None
    """Pre-registers the DT network (``gateway_bic``, KZT) at this URL, if set."""
    admin_token: SecretStr | None = None
    """Bearer token the administrative endpoints require (registering participants, trades,
    simulated accounts, fault injection); with it set, a PvP and its messages are shown only
    to its holder and to the participants the PvP concerns. None: all open, as for a
    connector on 127.0.0.1 that only its owner's tests reach; set it wherever test partners
    reach it, or any of them could re-register another's network or read another's PvPs."""
    gateway_cert_pem: str | None = None
    safety_margin_ms: int = 500
    """COMMIT only if both legs are locked before deadline - margin."""
    match_window_seconds: float = 60.0
    """Two instructions match when their value times are at most this far apart."""
    simulated_currencies: dict[str, str] = Field(
        default_factory=lambda: {"AED": "CBAUAEAA", "CNY": "PBOCCNBJ", "TRY": "TCMBTR2A"}
    )
    """Currency -> BIC of the simulated foreign central bank run inside the connector."""
    sim_accounts: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Currency -> account -> opening balance (minor units), seeded on first start."""
    auto_counter_instruct: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Simulated counterparty BIC -> {currency: account}: the connector files the mirror
    instruction for it, so a DT participant's instruction alone makes a matched PvP."""
    sweep_interval_ms: int = 100
    redeliver_after_ms: int = 30_000
    """A decision delivered (HTTP 202: the network stored it) but not acknowledged (ACSC /
    camt.029) this long after its delivery is sent again; each further attempt waits twice as
    long, up to ``redeliver_cap_ms``. A safety net, not the normal path: a network that
    accepted a decision answers it, if need be after a backlog, and each copy re-sent into
    that backlog is stored, processed and answered again (3 s made bursts re-send most
    decisions several times)."""
    redeliver_cap_ms: int = 60_000
    reception_threads: int = 3
    """Threads storing what the networks post to ``/iso20022/messages``: each takes every
    envelope waiting into one transaction, answers them all, then delivers what its commit
    queued (a decision) itself while another stays free for new posts
    (``gateway.messaging.queues.Batcher``); else a sender's thread is woken for it.
    Against 2, measured in alternated pairs at 70 PvP/s: a lower p99 in 5 of 6 pairs with 3,
    the same unbatched rate; with 4, a lower p99 in 5 of 8 but bursts ~9 % slower
    (``docs/performance.md``)."""
    senders_per_network: int = 4
    """Threads delivering outbox rows to each network (each network with its own pooled HTTP
    client; a simulated bank's handling runs on its own threads)."""
    retry_base_ms: int = 50
    retry_cap_ms: int = 5000
    http_timeout_seconds: float = 5.0
    batch_max: int = 1
    """>1: pacs.009 to the same network are grouped into one multi-transaction message."""
    sim_inline: bool = True
    """A simulated bank answers in the transaction that sends to it: the pacs.009 in the
    trade's, a decision in the deciding one, each recorded as delivered. False, or while
    fault rules or crash points are set: through its lane, after the commit, as a remote
    network (faults act on that delivery). Either way the bank and the messages are the same."""
    batch_linger_ms: int = 2
    cpus: str | None = None
    """CPUs ``dt-gateway connector`` runs on, as a Linux CPU list (``1``, ``0-3``,
    ``0,2``); ``--cpus`` overrides it. None: wherever the operating system places it. See
    ``gateway.cpus``."""

    _check_cpus = field_validator("cpus")(_cpu_list)


class StablecoinSettings(_Section):
    rpc_url: str = ""
    """JSON-RPC endpoint. Empty: the embedded default (anvil if installed, else in-process)."""
    chain_id: int | None = None
    contract_address: str | None = None
    operator_key: SecretStr | None = None
    """Private key (hex) that sends mint transactions (holds the minter role)."""
    attestor_key: SecretStr | None = None
    confirmations: int = 1
    """Blocks a transaction or event needs before it counts (1 = mined)."""
    poll_seconds: float = 0.5
    """How often the redemption watcher and reconciliation look at the chain."""
    receipt_poll_seconds: float = 0.01
    receipt_timeout_seconds: float = 60.0
    gas_margin: float = 1.2
    max_attestation_age_seconds: int = 86_400
    token_name: str = "Digital Tenge KZT"  # noqa: S105 (a token name, not a secret)
    token_symbol: str = "KZTD"  # noqa: S105
    pauser_address: str | None = None
    blocklister_address: str | None = None
    webhook_secret: SecretStr | None = None
    """Secret of ``webhook_url`` (earlier versions' single endpoint): the adopted endpoint
    keeps it, so its receiver verifies as before."""
    webhook_url: str | None = None
    """Earlier versions' single webhook URL. Set, it is adopted at start-up as an endpoint of
    the exchange ``webhook_exchange`` names (docs/stablecoin.md, "Webhooks")."""
    webhook_exchange: str | None = None
    """The exchange (its keys' ``subject``) that ``webhook_url`` belongs to: required with it,
    so that no exchange's events go to another's receiver."""
    webhook_timeout_seconds: float = 5.0
    segregated_wallet_id: str | None = None
    """The DT wallet holding the collateral (kind segregated_collateral); default derived from
    the chain id and contract address, opened on first use."""
    start_block: int = 0
    """Where the redemption watcher starts on a new database (the contract's deployment block)."""
    max_block_range: int = 2000
    """Largest block range per ``eth_getLogs`` (public nodes cap it)."""
    reorg_rewind_blocks: int = 64
    """How far back the watcher rescans when its last block's hash changed (a reorganisation)."""
    mint_retry_after_seconds: float = 5.0
    """A mint left accepted or submitted this long (a crash, a node outage) is driven again."""
    reconcile_seconds: float = 5.0
    submitted_after_seconds: float = 0.5
    """A mint not confirmed this long after sending is recorded as submitted (with its hash)
    before the gateway waits on; a quicker one goes from accepted straight to minted."""
    fee_cache_seconds: float = 1.0
    """How long the base fee read for one transaction is reused for the next ones."""
    max_mint_amount: int = Field(default=100_000_000_000, ge=1)
    """The largest amount one mint request may carry, in tiyn (default 1,000,000,000.00 KZT);
    a larger one is refused (``422 MINT_LIMIT_EXCEEDED``) before any DT moves."""


class WitnessSettings(_Section):
    """A witness the collateral log asks to cosign its checkpoints (C2SP tlog-witness)."""

    url: str
    """The witness's submission prefix: checkpoints are POSTed to ``<url>/add-checkpoint``."""
    vkey: str
    """Its cosignature/v1 verifier key, ``<name>+<hex id>+<base64(0x04 || key)>`` (what
    ``dt-gateway witness`` prints at start)."""


class CollateralSettings(_Section):
    """The proof-of-collateral log (docs/collateral.md). It runs with the stablecoin."""

    log_key: SecretStr | None = None
    """The log's Ed25519 signing key, in signed-note form
    (``PRIVATE+KEY+<origin>+<hex id>+<base64>``; ``dt-gateway collateral keygen`` prints one).
    Its name must be the log's origin. None: a development key is made once and kept in
    ``<data_dir>/collateral-log.key``."""
    origin_prefix: str = "dt-gateway"
    """The origin line is ``<prefix>/collateral/<chain id>/<contract>``: the log's public URL
    prefix without a scheme, for example ``gateway.example.kz``."""
    integrate_seconds: float = 0.25
    """How often pooled entries are sequenced into the tree and a checkpoint signed."""
    batch_limit: int = 5000
    """Most entries sequenced in one transaction."""
    resign_seconds: float = 10.0
    """A checkpoint is signed again at least this often with no new entries, so that its
    timestamp shows the log is live (verifiers refuse an old one)."""
    statement_seconds: float = 60.0
    """A reserve statement is logged at least this often, and after any chain event."""
    checkpoint_cache_seconds: float = 0.2
    """How long a replica serves the checkpoint it read before reading it again."""
    rate_per_second: float = 200.0
    """Public collateral routes: requests a second per client address (sustained)."""
    rate_burst: int = 2000
    """Public collateral routes: the burst a client address may send above the rate."""
    witnesses: tuple[WitnessSettings, ...] = ()
    """Witnesses each new checkpoint is submitted to; the checkpoint served carries the
    cosignatures they return (as JSON in the environment: ``[{"url": ..., "vkey": ...}]``)."""
    witness_seconds: float = 0.25
    """How often the newest checkpoint is looked at, and submitted if it is new."""
    witness_timeout_seconds: float = 5.0
    """How long one submission to a witness may take."""
    witness_retry_seconds: float = 1.0
    """A witness that failed is asked again after this long, twice as long after each further
    failure, up to ``witness_retry_max_seconds``."""
    witness_retry_max_seconds: float = 60.0
    witness_grace_seconds: float = 30.0
    """The checkpoint served is the newest one put to the witnesses, with their cosignatures;
    when that was signed this much before the newest signed one (the submitting job is not
    running), the newest signed one is served instead, without cosignatures. Longer than
    ``resign_seconds``, which is how far apart two checkpoints of a quiet log are."""

    @model_validator(mode="after")
    def _grace_outlasts_resigning(self) -> CollateralSettings:
        if self.witness_grace_seconds <= self.resign_seconds:
            raise ValueError("collateral.witness_grace_seconds must exceed resign_seconds")
        return self


DEFAULT_REFUSED_NETWORKS = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT
    "192.0.0.0/24",  # IETF protocol assignments
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "::/128",
    "fc00::/7",  # unique local
    "ff00::/8",  # multicast
)


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """Validate ``refused_networks`` at load time (CIDR blocks)."""
    for net in value:
        ipaddress.ip_network(net, strict=False)
    return value


class WebhookSettings(_Section):
    """Where exchanges' webhook endpoints may point, and how many each may have.

    Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, ...) are always
    refused, whatever these say; so is the gateway itself."""

    max_endpoints_per_exchange: int = Field(default=5, ge=1, le=100)
    max_url_length: int = Field(default=2048, ge=16, le=2048)
    allow_loopback: bool = False
    """Allow 127.0.0.0/8 and ::1: for tests and the demo, whose receivers run on this host.
    Never in production: a receiver on the gateway's own host is not an exchange's."""
    refused_networks: tuple[str, ...] = DEFAULT_REFUSED_NETWORKS
    """Address blocks no endpoint may resolve into (private networks by default: an
    endpoint there could reach the operator's internal services)."""

    _check_networks = field_validator("refused_networks")(_networks)


class PvPSettings(_Section):
    """The gateway side of PvP (docs/pvp-protocol.md, "Gateway side").

    The gateway's own BIC is ``connector.gateway_bic`` and the connector's endpoint
    ``connector.url``; the connector's certificate is pinned in ``iso20022.connector_cert_pem``.
    """

    connector_bic: str = "SWHQBEBBXXX"
    """AppHdr/To of what the gateway sends (keep equal to the connector's own BIC)."""
    connector_token: SecretStr | None = None
    """Bearer token for the connector's JSON API (``POST /v1/instructions``)."""
    grace_seconds: float = 2.0
    """A locked leg this long past its deadline without a decision: ask the connector."""
    status_retry_seconds: float = 5.0
    """Interval between status requests (pacs.028) for the same undecided leg."""
    last_resort_seconds: float = 300.0
    """A locked leg this long past its deadline: alert and wait for an operator decision."""
    default_deadline_seconds: float = 60.0
    """Deadline of a pacs.009 without SttlmTmReq/TillTm, from its creation time."""
    reception_threads: int = 4
    """Threads storing the envelopes the connector posts: each takes every envelope waiting
    into one transaction, answers them all, then applies a message it stored alone (and
    sends the replies) while the workers have no backlog."""
    process_on_receipt: bool = True
    """While the workers have no backlog, a reception thread applies the messages it stores
    in the same transaction (one commit, one fsync, before the 202s) instead of storing,
    answering, then applying them in a second. Off, every message is stored, answered, and
    only then applied: the state "stored, not yet processed" that recovery tests crash in."""
    workers: int = 4
    """Threads applying inbound messages stored together, a backlog, and what a crash or a
    failure left unprocessed."""
    inbox_batch: int = 32
    """Most inbound messages a worker applies in one transaction (it takes what is queued)."""
    dispatchers: int = 4
    """Threads of the connector's outbox lane: they send what the threads that queued it may
    not send themselves, and what the outbox dispatcher claims (retries, what a crash left)."""
    http_timeout_seconds: float = 5.0
    http_max_connections: int = 32
    inbox_retry_after_seconds: float = 5.0
    """The recovery job leaves an inbox item this long to the worker woken for it."""
    sweep_seconds: float = 1.0
    """Period of the inbox recovery and deadline jobs."""


class FaultSettings(_Section):
    """Crash points for recovery tests: the process kills itself (SIGKILL) when it reaches one.

    Never set in production. Example: ``DT_GATEWAY_FAULTS__CRASH_POINTS='["mint.after_ledger"]'``.
    """

    crash_points: frozenset[str] = frozenset()


class Settings(BaseSettings):
    """The whole configuration. Construct with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("var")
    log_level: str = "INFO"
    cpus: str | None = None
    """CPUs ``dt-gateway serve`` runs on, as a Linux CPU list (``0``, ``0-3``, ``0,2``);
    ``--cpus`` overrides it. None: wherever the operating system places it. See
    ``gateway.cpus``."""
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    iso20022: Iso20022Settings = Field(default_factory=Iso20022Settings)
    connector: ConnectorSettings = Field(default_factory=ConnectorSettings)
    stablecoin: StablecoinSettings = Field(default_factory=StablecoinSettings)
    pvp: PvPSettings = Field(default_factory=PvPSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    collateral: CollateralSettings = Field(default_factory=CollateralSettings)
    faults: FaultSettings = Field(default_factory=FaultSettings)
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    keys: KeySettings = Field(default_factory=KeySettings)

    _check_cpus = field_validator("cpus")(_cpu_list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init values), which beats the defaults.
        return (env_settings, init_settings)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: str | Path | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings: defaults < TOML file < environment < ``overrides``.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping.
    """
    env = os.environ if environ is None else environ
    path = config_file or env.get(CONFIG_ENV)
    file_values: dict[str, Any] = {}
    if path:
        with open(path, "rb") as fh:
            file_values = tomllib.load(fh)
    if environ is not None:
        # pydantic-settings reads os.environ; swap in the caller's mapping for the duration.
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(environ)
            settings = Settings(**file_values)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    else:
        settings = Settings(**file_values)
    if overrides:
        settings = Settings.model_validate(_deep_merge(settings.model_dump(), overrides))
    return settings


__all__ = [
    "DEFAULT_REFUSED_NETWORKS",
    "ConnectorSettings",
    "DatabaseSettings",
    "FaultSettings",
    "HttpSettings",
    "Iso20022Settings",
    "LedgerSettings",
    "PvPSettings",
    "Settings",
    "StablecoinSettings",
    "WebhookSettings",
    "WitnessSettings",
    "load_settings",
]

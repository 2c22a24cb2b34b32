"""``dt-gateway``: serve, db, keys, ledger, stablecoin, demo, collateral, verify-collateral,
witness.

Run ``dt-gateway --help`` or ``dt-gateway COMMAND --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

from pydantic import ValidationError

from gateway import logcontext
from gateway.config import Settings, load_settings
from gateway.config_ops import secret_values
from gateway.cpus import pin_process
from gateway.db import SchemaOutOfDate, check_schema, make_engine, schema_revisions, upgrade
from gateway.errors import GatewayError, InvalidInput
from gateway.pgengine import server_advice

log = logging.getLogger("gateway")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    logcontext.add_secrets(secret_values(settings))  # never in a log line, whatever logs it
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.api.app import create_app
    from gateway.jobs import Jobs
    from gateway.messaging.serving import run_server
    from gateway.serverlock import hold_server_lock

    settings = _settings(args)
    # First of all: a second server on the same SQLite file is refused before it touches it.
    server_lock = hold_server_lock(settings.database.url)
    cpus = args.cpus or settings.cpus
    if cpus:
        pin_process(cpus)
    if args.metrics_port is not None:
        metrics = settings.metrics.model_copy(update={"port": args.metrics_port})
        settings = settings.model_copy(update={"metrics": metrics})
    engine = make_engine(settings.database)
    if settings.database.check_schema:
        check_schema(engine)
    for advice in server_advice(engine):
        log.warning(advice)
    if args.host or args.port:  # the address served is the gateway's own: no webhook there
        http = {"host": args.host or settings.http.host, "port": args.port or settings.http.port}
        settings = settings.model_copy(update={"http": settings.http.model_copy(update=http)})
    from gateway.stablecoin import endpoints_service
    from gateway.stablecoin.endpoints_store import WebhookUnitOfWork

    endpoints_service.adopt_legacy_url(partial(WebhookUnitOfWork, engine), settings)
    stablecoin = None
    if settings.stablecoin.contract_address:
        from gateway.stablecoin.runtime import Stablecoin

        stablecoin = Stablecoin.from_settings(settings)
    from gateway.pvp.runtime import PvPRuntime

    pvp = PvPRuntime(settings, engine)
    jobs = Jobs(settings, engine, stablecoin=stablecoin, pvp=pvp)
    app = create_app(
        settings,
        engine,
        on_startup=[jobs.start],
        on_shutdown=[jobs.stop],
        stablecoin=stablecoin,
        pvp=pvp,
    )
    app.state.metrics.database.replica = jobs.holder  # dtg_job_lease_held
    host = args.host or settings.http.host
    port = args.port or settings.http.port
    try:
        run_server(app, host, port, settings.log_level.lower())
    finally:
        if server_lock is not None:
            server_lock.release()
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.db_command == "backup":
        from pathlib import Path

        from gateway.backup import backup_sqlite

        done = backup_sqlite(settings.database.url, Path(args.target))
        print(json.dumps({"backup": str(done.path), "pages": done.pages, "bytes": done.bytes}))
        return 0
    engine = make_engine(settings.database)
    if args.db_command == "upgrade":
        upgrade(engine, args.revision)
    current, head = schema_revisions(engine)
    print(json.dumps({"current": current, "head": head, "up_to_date": current == head}))
    return 0


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise InvalidInput(f"not a duration: {text!r} (e.g. 90d, 12h, 30m, 3600)")
    return timedelta(seconds=float(found[1]) * _UNITS[found[2]])


def parse_expiry(text: str | None, now: datetime) -> datetime | None:
    """A key's expiry: a duration from now (``90d``) or an ISO 8601 date-time (UTC if no zone)."""
    if text is None:
        return None
    if _DURATION.match(text.strip()):
        return now + parse_duration(text)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"not a duration nor a date-time: {text!r}") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _when(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="seconds")


def cmd_keys(args: argparse.Namespace) -> int:
    from gateway import auth

    engine = make_engine(_settings(args).database)
    check_schema(engine)
    now = datetime.now(UTC)
    if args.keys_command == "create":
        created = auth.create_key(
            engine,
            args.role,
            label=args.label,
            subject=args.subject,
            expires_at=parse_expiry(args.expires, now),
        )
        print(
            json.dumps(
                {
                    "key_id": created.principal.key_id,
                    "role": created.principal.role.value,
                    "subject": created.principal.subject,
                    "expires_at": _when(created.principal.expires_at),
                    "token": created.token,
                }
            )
        )
        print("store the token now: it is not shown again", file=sys.stderr)
    elif args.keys_command == "list":
        keys = auth.list_keys(engine, everything=args.all)
        listed = [
            {
                "key_id": k.key_id,
                "role": k.role,
                "subject": k.subject,
                "label": k.label,
                "state": k.state(now),
                "created_at": _when(k.created_at),
                "expires_at": _when(k.expires_at),
                "revoked_at": _when(k.revoked_at),
                "last_used_at": _when(k.last_used_at),
                "replaces": k.replaces,
            }
            for k in keys
        ]
        print(json.dumps({"keys": listed}, indent=2))
    elif args.keys_command == "rotate":
        created, until = auth.rotate_key(
            engine,
            args.key_id,
            grace=parse_duration(args.grace),
            expires_at=parse_expiry(args.expires, now),
        )
        print(
            json.dumps(
                {
                    "key_id": created.principal.key_id,
                    "role": created.principal.role.value,
                    "subject": created.principal.subject,
                    "expires_at": _when(created.principal.expires_at),
                    "replaces": args.key_id,
                    "old_key_stops_at": _when(until),
                    "token": created.token,
                }
            )
        )
        print("store the token now: it is not shown again", file=sys.stderr)
    else:
        auth.revoke_key(engine, args.key_id)
        print(json.dumps({"revoked": args.key_id}))
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from gateway.ledger import service
    from gateway.ledger.store import LedgerUnitOfWork

    engine = make_engine(_settings(args).database)
    check_schema(engine)
    report = service.check_invariants(LedgerUnitOfWork(engine, readonly=True))
    print(
        json.dumps(
            {
                "ok": report.ok,
                "total_posted": report.total_posted,
                "issued_minus_redeemed": report.issued_minus_redeemed,
                "violations": list(report.violations),
            }
        )
    )
    return 0 if report.ok else 1


def cmd_stablecoin(args: argparse.Namespace) -> int:
    from gateway.stablecoin.chain import StablecoinChain, account_from_key

    sc = _settings(args).stablecoin
    if not sc.rpc_url or sc.operator_key is None:
        print("dt-gateway: set stablecoin.rpc_url and stablecoin.operator_key", file=sys.stderr)
        return 2
    operator = account_from_key(sc.operator_key.get_secret_value())
    deployer = account_from_key(args.deployer_key) if args.deployer_key else operator
    attestor = account_from_key(sc.attestor_key.get_secret_value()) if sc.attestor_key else None
    chain = StablecoinChain.connect(sc.rpc_url)
    start_block = chain.block_number()
    address = chain.deploy(
        deployer,
        name=sc.token_name,
        symbol=sc.token_symbol,
        max_attestation_age=sc.max_attestation_age_seconds,
        minter=operator.address,
        pauser=sc.pauser_address or operator.address,
        blocklister=sc.blocklister_address or operator.address,
        attestor=attestor.address if attestor else None,
    )
    print(
        json.dumps(
            {
                "DT_GATEWAY_STABLECOIN__CONTRACT_ADDRESS": address,
                "DT_GATEWAY_STABLECOIN__CHAIN_ID": str(chain.chain_id),
                "DT_GATEWAY_STABLECOIN__START_BLOCK": str(start_block),
                "admin": deployer.address,
                "minter": operator.address,
                "attestor": attestor.address if attestor else None,
            }
        )
    )
    return 0


def cmd_connector(args: argparse.Namespace) -> int:
    from gateway.connector.serving import serve

    return serve(_settings(args), host=args.host, port=args.port, cpus=args.cpus)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(workdir=args.workdir, keep=args.keep)


def cmd_collateral(args: argparse.Namespace) -> int:
    from gateway.collateral.note import Signer
    from gateway.collateral.runtime import origin_of

    if not args.origin and not (args.chain_id and args.contract):
        print("dt-gateway: give --origin, or --chain-id and --contract", file=sys.stderr)
        return 2
    prefix = _settings(args).collateral.origin_prefix
    origin = args.origin or origin_of(prefix, args.chain_id, args.contract)
    signer = Signer.generate(origin)
    # The private key goes to stdout only, for the operator to store as collateral.log_key.
    print(json.dumps({"origin": origin, "log_key": signer.skey(), "vkey": signer.vkey()}))
    return 0


def cmd_verify_collateral(args: argparse.Namespace) -> int:
    from gateway.collateral.verifier import run

    return run(args)


def cmd_witness(args: argparse.Namespace) -> int:
    from gateway.collateral.witness_server import run

    return run(args)


def build_parser(words: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser. ``words``: the command line's; the commands whose arguments
    are defined by modules of their own (``verify-collateral``, ``partner-check``, ``witness``)
    get them only when named there, so that every other command's process starts without
    loading those modules (None: every command gets its arguments)."""

    def named(command: str) -> bool:
        return words is None or command in words

    # No abbreviations at the top: argparse matches every option string of the command line
    # against these prefixes, so `witness --log` would clash with --log-level and its siblings.
    parser = argparse.ArgumentParser(prog="dt-gateway", description=__doc__, allow_abbrev=False)
    parser.add_argument("--config", help="TOML settings file (default: $DT_GATEWAY_CONFIG)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ...")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="json: one JSON object per line (default for serve when stderr is not a terminal)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway's HTTP API and scheduled jobs")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--cpus", help="run on these CPUs only, e.g. 0 or 0-1 (Linux; see docs)")
    p.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (metrics.port)"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("db", help="database schema")
    dbs = p.add_subparsers(dest="db_command", required=True)
    up = dbs.add_parser("upgrade", help="apply migrations up to REVISION (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    dbs.add_parser("current", help="show the schema revision")
    bk = dbs.add_parser("backup", help="copy a SQLite database while it serves (online backup)")
    bk.add_argument("target", help="the file to write")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("keys", help="API keys")
    ks = p.add_subparsers(dest="keys_command", required=True)
    kc = ks.add_parser("create", help="create a key and print it once")
    kc.add_argument("--role", required=True, choices=["operator", "participant", "exchange"])
    kc.add_argument("--label", default="")
    kc.add_argument("--subject", default="", help="BIC, wallet or exchange the key acts for")
    kc.add_argument("--expires", help="a duration (90d, 12h) or an ISO 8601 date-time")
    kl = ks.add_parser("list", help="the active keys, with their last use (never their secrets)")
    kl.add_argument("--all", action="store_true", help="revoked and expired keys too")
    kt = ks.add_parser(
        "rotate", help="a new key for the same holder; the old one stops after --grace"
    )
    kt.add_argument("key_id")
    kt.add_argument(
        "--grace", default="24h", help="how long the old key keeps working (0: revoke it now)"
    )
    kt.add_argument("--expires", help="the new key's expiry: a duration or a date-time")
    kr = ks.add_parser("revoke", help="revoke a key by its id (every replica within a second)")
    kr.add_argument("key_id")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("ledger", help="ledger maintenance")
    ls = p.add_subparsers(dest="ledger_command", required=True)
    ls.add_parser("check", help="recompute conservation and balance invariants")
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("stablecoin", help="the stablecoin contract")
    ss = p.add_subparsers(dest="stablecoin_command", required=True)
    sd = ss.add_parser("deploy", help="deploy with the configured keys; print the settings")
    sd.add_argument("--deployer-key", help="admin key (hex; default: the operator key)")
    p.set_defaults(func=cmd_stablecoin)

    p = sub.add_parser("connector", help="run the SWIFT CBDC-connector mock")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--cpus", help="run on these CPUs only, e.g. 0 or 0-1 (Linux; see docs)")
    p.set_defaults(func=cmd_connector)

    p = sub.add_parser("demo", help="run the gateway end to end with embedded defaults")
    p.add_argument("--workdir", default="var/demo", help="where the demo keeps its databases")
    p.add_argument("--keep", action="store_true", help="keep the previous demo's data")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("collateral", help="the proof-of-collateral log")
    cs = p.add_subparsers(dest="collateral_command", required=True)
    kg = cs.add_parser(
        "keygen", help="make a log key: prints origin, log_key (keep it secret) and vkey (publish)"
    )
    kg.add_argument("--origin", help="the log's origin (default: from the settings' prefix and)")
    kg.add_argument("--chain-id", type=int, help="... the chain id")
    kg.add_argument("--contract", help="... and the contract address")
    p.set_defaults(func=cmd_collateral)

    p = sub.add_parser("verify-collateral", help="check the public proof of collateral yourself")
    if named("verify-collateral"):
        from gateway.collateral.verifier import add_arguments as add_verifier_arguments

        add_verifier_arguments(p)
        p.set_defaults(func=cmd_verify_collateral)

    p = sub.add_parser(
        "partner-check",
        help="run the connector's scenarios against a partner central bank's endpoint",
    )
    if named("partner-check"):
        from gateway.connector import partnerscenarios

        partnerscenarios.add_arguments(p)
        p.set_defaults(func=partnerscenarios.main)

    p = sub.add_parser("witness", help="run a C2SP tlog-witness that cosigns logs' checkpoints")
    if named("witness"):
        from gateway.collateral.witness_server import add_arguments as add_witness_arguments

        add_witness_arguments(p)
        p.set_defaults(func=cmd_witness)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(words).parse_args(words)
    fmt = args.log_format or logcontext.default_format(args.command)
    logcontext.configure(args.log_level or "WARNING", fmt)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ValidationError as exc:  # a setting from the file or the environment
        print(f"dt-gateway: invalid settings: {exc}", file=sys.stderr)
        return 2
    except SchemaOutOfDate as exc:
        print(f"dt-gateway: {exc.detail}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"dt-gateway: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

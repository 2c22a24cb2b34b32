"""The chain client's errors, and the one place that translates web3's exceptions into them.

Nothing from web3 escapes the client: every call to the node runs inside :func:`translating`::

    GatewayError
     ├── Unavailable
     │    ├── ChainUnavailable           the node does not answer or answers with an RPC error
     │    └── TransactionNotConfirmed    no receipt (or not enough confirmations) in time
     ├── InvalidInput
     │    └── InvalidChainInput          malformed request id, address, wallet reference, ...
     └── Unprocessable
          └── ContractReverted           the contract refused; ``error_name`` is its custom error
               ├── MintRequestAlreadyUsed     (code DU01)
               ├── ReserveGuardRefused        ReserveExceeded, AttestationStale (on mint)
               ├── AttestationRejected        stale, future, replayed, wrongly signed, log behind
               ├── AccountBlocked             AccountBlocklisted
               ├── ContractPaused             EnforcedPause
               └── MissingRole                AccessControlUnauthorizedAccount
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

from gateway.errors import InvalidInput, Unavailable, Unprocessable
from gateway.stablecoin.contract import ContractArtifact, DecodedRevert


class ChainUnavailable(Unavailable):
    """``detail`` is the node's own reason, often with its address: it goes to the log, and a
    client sees the title."""

    code = "CHAIN_UNAVAILABLE"
    title = "The chain node is unreachable or refused the request"
    detail_is_public = False


class TransactionNotConfirmed(Unavailable):
    code = "TX_NOT_CONFIRMED"
    title = "The transaction was not confirmed in time"


class InvalidChainInput(InvalidInput):
    code = "INVALID_CHAIN_INPUT"


class ContractReverted(Unprocessable):
    """The contract refused the call. ``error_name``/``error_args`` decode its custom error."""

    code: ClassVar[str] = "CONTRACT_REVERTED"
    title: ClassVar[str] = "The contract refused the call"
    error_names: ClassVar[frozenset[str]] = frozenset()
    """The custom errors (by name) that map to this class."""

    def __init__(self, detail: str = "", *, revert: DecodedRevert | None = None, **extra: Any):
        super().__init__(detail, **extra)
        self.error_name = revert.name if revert else None
        self.error_args: dict[str, Any] = dict(revert.args) if revert else {}


class MintRequestAlreadyUsed(ContractReverted):
    code = "DU01"
    title = "This mint request id was already used"
    error_names = frozenset({"MintRequestAlreadyUsed"})


class ReserveGuardRefused(ContractReverted):
    code = "RESERVE_GUARD"
    title = "The mint would exceed the attested reserve, or the attestation is stale"
    error_names = frozenset({"ReserveExceeded"})


class AttestationRejected(ContractReverted):
    code = "ATTESTATION_REJECTED"
    title = "The reserve attestation was refused"
    error_names = frozenset(
        {
            "AttestationFromFuture",
            "AttestationReplayed",
            "AttestationSignerNotAttestor",
            "AttestationValueTooLarge",
            "LogAnchorBehind",
            "LogAnchorConflict",
            "ECDSAInvalidSignature",
            "ECDSAInvalidSignatureLength",
            "ECDSAInvalidSignatureS",
        }
    )


class AccountBlocked(ContractReverted):
    code = "ACCOUNT_BLOCKED"
    title = "A party to the transfer is blocklisted"
    error_names = frozenset({"AccountBlocklisted"})


class ContractPaused(ContractReverted):
    code = "CONTRACT_PAUSED"
    title = "The contract is paused"
    error_names = frozenset({"EnforcedPause"})


class MissingRole(ContractReverted):
    code = "MISSING_ROLE"
    title = "The sender lacks the role this call needs"
    error_names = frozenset({"AccessControlUnauthorizedAccount"})


_REVERT_CLASSES: tuple[type[ContractReverted], ...] = (
    MintRequestAlreadyUsed,
    ReserveGuardRefused,
    AttestationRejected,
    AccountBlocked,
    ContractPaused,
    MissingRole,
)


def reverted(revert: DecodedRevert | None, function: str) -> ContractReverted:
    """The typed error for the contract's refusal of ``function`` (``revert``: its decoded
    custom error, if any)."""
    cls: type[ContractReverted] = ContractReverted
    if revert is not None:
        for candidate in _REVERT_CLASSES:
            if revert.name in candidate.error_names:
                cls = candidate
                break
        if revert.name == "AttestationStale":
            # The same custom error guards mint (stale reserve) and postAttestation (stale input).
            cls = AttestationRejected if function == "postAttestation" else ReserveGuardRefused
    what = str(revert) if revert else "no reason given"
    return cls(f"{function} reverted: {what}", revert=revert, function=function)


@contextlib.contextmanager
def translating(artifact: ContractArtifact, function: str) -> Iterator[None]:
    """Run a call to the node, raising this module's errors instead of web3's (or the
    in-process chain's); ``artifact`` decodes the contract's custom errors."""
    try:
        yield
    except Exception as exc:
        error = _translated(exc, artifact, function)
        if error is None:
            raise
        raise error from exc


def _translated(exc: Exception, artifact: ContractArtifact, function: str) -> Exception | None:
    """This module's error for ``exc``, or None for an error that is not the node's."""
    # web3 is loaded here, where a call to the node failed, and not with this module: a
    # gateway without a stablecoin imports these errors and never loads web3 (~1 s a process).
    import requests
    from web3.exceptions import ContractLogicError, Web3Exception, Web3RPCError

    if isinstance(exc, ContractLogicError):
        data = _revert_data(exc)
        revert = artifact.decode_revert(data) if data else None
        if revert is None and exc.message:
            revert = DecodedRevert("Error", {"message": str(exc.message)})
        return reverted(revert, function)
    if isinstance(exc, Web3RPCError):
        data = _revert_data(exc)
        if data:
            return reverted(artifact.decode_revert(data), function)
        return ChainUnavailable(f"{function}: {exc.message}")
    if isinstance(exc, (requests.RequestException, OSError, Web3Exception)):
        return ChainUnavailable(f"{function}: {exc}")
    # The in-process chain (eth-tester) raises its own exceptions, not RPC errors.
    if not type(exc).__module__.startswith(_IN_PROCESS_ERROR_MODULES):
        return None
    if type(exc).__name__ == "TransactionFailed":
        data = _tester_revert_data(exc)
        revert = artifact.decode_revert(data) if data else None
        return reverted(revert, function)
    return ChainUnavailable(f"{function}: {exc}")


def _revert_data(exc: BaseException) -> bytes | None:
    """The revert bytes carried by a web3 exception, when it carries any."""
    from web3.exceptions import Web3RPCError

    data: Any = getattr(exc, "data", None)
    if data is None and isinstance(exc, Web3RPCError) and exc.rpc_response:
        error = exc.rpc_response.get("error")
        data = error.get("data") if isinstance(error, dict) else None
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, bytes):
        return data
    return None


_IN_PROCESS_ERROR_MODULES = ("eth_tester", "eth_utils", "eth.")
"""Where the in-process chain's exceptions come from (e.g. py-evm's nonce ValidationError)."""


def _tester_revert_data(exc: BaseException) -> bytes | None:
    """eth-tester's TransactionFailed holds the revert bytes, possibly one exception down."""
    seen: BaseException | None = exc
    while seen is not None:
        first = seen.args[0] if seen.args else None
        if isinstance(first, BaseException) and first.args:
            first = first.args[0]
        if isinstance(first, bytes):
            return first
        seen = seen.__cause__ or seen.__context__
    return None


__all__ = [
    "AccountBlocked",
    "AttestationRejected",
    "ChainUnavailable",
    "ContractPaused",
    "ContractReverted",
    "InvalidChainInput",
    "MintRequestAlreadyUsed",
    "MissingRole",
    "ReserveGuardRefused",
    "TransactionNotConfirmed",
    "reverted",
    "translating",
]

"""The stablecoin contract over any EVM JSON-RPC endpoint (or the in-process chain).

Transactions are signed locally (eth-account, with coincurve) and sent raw, so the node never
holds a key. Nonces come from a thread-safe :class:`NonceAllocator` seeded from the node's
``pending`` count: it survives restarts (the chain is the source of truth) and concurrent senders
in other processes (a nonce error resyncs and retries); each sender's transactions reach the node
in nonce order. Gas is estimated before a nonce is taken, so a call that would revert fails early
with the contract's error and burns no nonce.

Errors are translated here, at the boundary; nothing from web3 escapes::

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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import requests
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.providers.rpc import HTTPProvider
from web3.types import BlockIdentifier, RPCEndpoint, TxParams

from gateway.config import StablecoinSettings
from gateway.errors import InvalidInput, Unavailable, Unprocessable
from gateway.stablecoin.contract import (
    EIP712_VERSION,
    EMPTY_LOG_ROOT,
    ContractArtifact,
    DecodedRevert,
    load_artifact,
)

# ---------------------------------------------------------------------------------------- errors


class ChainUnavailable(Unavailable):
    code = "CHAIN_UNAVAILABLE"
    title = "The chain node is unreachable or refused the request"


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


_PAUSED = keccak(text="paused()")[:4]
_IS_BLOCKLISTED = keccak(text="isBlocklisted(address)")[:4]

_REVERT_CLASSES: tuple[type[ContractReverted], ...] = (
    MintRequestAlreadyUsed,
    ReserveGuardRefused,
    AttestationRejected,
    AccountBlocked,
    ContractPaused,
    MissingRole,
)


def _reverted(revert: DecodedRevert | None, function: str) -> ContractReverted:
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


# ---------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    contract_address: ChecksumAddress | None = None


@dataclass(frozen=True)
class SubmittedTx:
    """A sent transaction whose receipt has not been awaited yet."""

    tx_hash: str
    function: str
    tx: dict[str, Any]


@dataclass(frozen=True)
class Attestation:
    """The values an attestor signs (EIP-712 ``ReserveAttestation``); amounts in tiyn.

    ``log_size`` and ``log_root`` anchor the collateral log: the tree size and root hash of a
    signed checkpoint at which the log's ``dt`` entries show ``reserve``. The default is the
    empty tree, which a contract that anchored a larger tree refuses.
    """

    reserve: int
    sequence: int
    timestamp: int
    wallet_ref_hash: bytes
    log_size: int = 0
    log_root: bytes = EMPTY_LOG_ROOT

    @staticmethod
    def wallet_ref_hash_of(dt_wallet_ref: str) -> bytes:
        """keccak256 of the segregated DT wallet's reference, as the attestation carries it."""
        return keccak(text=dt_wallet_ref)


@dataclass(frozen=True)
class RedeemedEvent:
    """One ``Redeemed(from, amount, dtWalletRef)`` log; (tx_hash, log_index) identifies it."""

    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    redeemer: ChecksumAddress
    amount: int
    dt_wallet_ref: str


@dataclass(frozen=True)
class MintedEvent:
    """One ``Minted(to, amount, requestId)`` log."""

    tx_hash: str
    block_number: int
    block_hash: str
    to: ChecksumAddress
    amount: int
    log_index: int = 0
    request_id: bytes = b""

    @classmethod
    def of(cls, log: Any) -> MintedEvent:
        return cls(
            tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
            block_number=int(log["blockNumber"]),
            block_hash=HexBytes(log["blockHash"]).to_0x_hex(),
            to=to_checksum_address(log["args"]["to"]),
            amount=int(log["args"]["amount"]),
            log_index=int(log["logIndex"]),
            request_id=bytes(log["args"]["requestId"]),
        )


@dataclass(frozen=True)
class LatestAttestation:
    reserve: int
    timestamp: int
    sequence: int
    max_age: int


@dataclass(frozen=True)
class LogAnchor:
    """The collateral log's tree the contract anchored last (size, RFC 9162 root)."""

    size: int
    root: bytes


def attestation_typed_data(
    attestation: Attestation, *, token_name: str, chain_id: int, contract: str
) -> dict[str, Any]:
    """The full EIP-712 message (domain: the token's name, version "1", chain id, contract)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "ReserveAttestation": [
                {"name": "reserve", "type": "uint256"},
                {"name": "sequence", "type": "uint256"},
                {"name": "timestamp", "type": "uint256"},
                {"name": "walletRefHash", "type": "bytes32"},
                {"name": "logSize", "type": "uint256"},
                {"name": "logRoot", "type": "bytes32"},
            ],
        },
        "primaryType": "ReserveAttestation",
        "domain": {
            "name": token_name,
            "version": EIP712_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract),
        },
        "message": {
            "reserve": attestation.reserve,
            "sequence": attestation.sequence,
            "timestamp": attestation.timestamp,
            "walletRefHash": attestation.wallet_ref_hash,
            "logSize": attestation.log_size,
            "logRoot": attestation.log_root,
        },
    }


def sign_attestation(
    attestor: LocalAccount,
    attestation: Attestation,
    *,
    token_name: str,
    chain_id: int,
    contract: str,
) -> bytes:
    """A 65-byte (r, s, v) EIP-712 signature by ``attestor`` over ``attestation``."""
    message = encode_typed_data(
        full_message=attestation_typed_data(
            attestation, token_name=token_name, chain_id=chain_id, contract=contract
        )
    )
    return bytes(attestor.sign_message(message).signature)


# ---------------------------------------------------------------------------------------- nonces


class NonceAllocator:
    """Hands out consecutive nonces per sender and keeps each sender's sends in nonce order.

    :meth:`sending` holds the sender's lock from taking a nonce until the node has the
    transaction, so the node receives a sender's transactions in nonce order and never sees a
    gap. Out-of-order arrival is legal but fragile: a send that fails after later nonces went out
    strands them, and anvil's instant mining can leave out-of-order transactions unmined
    (foundry-rs/foundry#10122). The lock costs one local RPC per transaction per sender.

    Seeded lazily from ``eth_getTransactionCount(addr, "pending")``, so a restarted process
    continues where the chain is. A send that fails (a nonce error because another process sent
    with the same key, or a send whose fate is unknown) makes the next one re-read it.
    """

    def __init__(self, fetch_pending: Callable[[ChecksumAddress], int]) -> None:
        self._fetch = fetch_pending
        self._next: dict[ChecksumAddress, int] = {}
        self._locks: dict[ChecksumAddress, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def sending(self, address: ChecksumAddress) -> Iterator[int]:
        """The sender's next nonce, held until the block ends: it is used up if the block
        succeeds, and forgotten (re-read from the node next time) if it raises."""
        with self._guard:
            lock = self._locks.setdefault(address, threading.Lock())
        with lock:
            nonce = self._next.get(address)
            if nonce is None:
                nonce = self._fetch(address)
            try:
                yield nonce
            except BaseException:
                self._next.pop(address, None)
                raise
            self._next[address] = nonce + 1


def _is_nonce_error(message: str) -> bool:
    text = message.lower()
    return "nonce" in text or "replacement transaction underpriced" in text


def _is_already_known(message: str) -> bool:
    text = message.lower()
    return "already known" in text or "already imported" in text


def _revert_data(exc: BaseException) -> bytes | None:
    """The revert bytes carried by a web3 exception, when it carries any."""
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


# ---------------------------------------------------------------------------------------- client


class StablecoinChain:
    """The stablecoin contract at ``address`` on the chain behind ``w3``.

    ``confirmations``: a transaction counts as done when its block has this many blocks on top,
    itself included (1 = mined). ``poll_latency`` is the pause between receipt polls: keep it
    small, web3 (not the node) is the bottleneck on a local chain.
    """

    def __init__(
        self,
        w3: Web3,
        address: str | None = None,
        *,
        artifact: ContractArtifact | None = None,
        confirmations: int = 1,
        poll_latency: float = 0.01,
        receipt_timeout: float = 60.0,
        gas_margin: float = 1.2,
        fee_cache_seconds: float = 0.0,
    ) -> None:
        if confirmations < 1:
            raise InvalidChainInput("confirmations must be at least 1 (1 = mined)")
        self.w3 = w3
        self.artifact = artifact or load_artifact()
        self.confirmations = confirmations
        self.poll_latency = poll_latency
        self.receipt_timeout = receipt_timeout
        self.gas_margin = gas_margin
        self.fee_cache_seconds = fee_cache_seconds
        """Reuse the pending block's base fee this long (0: read it for every transaction).
        The max fee is twice the base fee, so a second of staleness is safe."""
        self._fee_cache: tuple[float, dict[str, int]] | None = None
        self.nonces = NonceAllocator(
            lambda addr: int(self.w3.eth.get_transaction_count(addr, "pending"))
        )
        self._address: ChecksumAddress | None = None
        self._chain_id: int | None = None
        self._token_name: str | None = None
        self._priority_fee: int | None = None
        self._abi_contract = w3.eth.contract(abi=self.artifact.abi)
        if address is not None:
            self.address = to_checksum_address(address)

    @classmethod
    def connect(cls, rpc_url: str, address: str | None = None, **kwargs: Any) -> StablecoinChain:
        """A client over an HTTP JSON-RPC endpoint."""
        return cls(http_web3(rpc_url), address, **kwargs)

    @classmethod
    def from_settings(
        cls, settings: StablecoinSettings, w3: Web3 | None = None, **kwargs: Any
    ) -> StablecoinChain:
        """A client per ``settings`` (rpc_url, contract_address, confirmations). Pass ``w3`` for
        the embedded dev chain (empty ``rpc_url``), e.g. ``start_devchain().w3``."""
        if w3 is None:
            if not settings.rpc_url:
                raise InvalidChainInput("no rpc_url: start a dev chain and pass its w3")
            w3 = http_web3(settings.rpc_url)
        kwargs.setdefault("confirmations", settings.confirmations)
        return cls(w3, settings.contract_address, **kwargs)

    # ------------------------------------------------------------------ identity

    @property
    def address(self) -> ChecksumAddress:
        if self._address is None:
            raise InvalidChainInput("no contract address: deploy first or pass one")
        return self._address

    @address.setter
    def address(self, value: ChecksumAddress) -> None:
        self._address = value
        self._token_name = None
        self._contract = self.w3.eth.contract(address=value, abi=self.artifact.abi)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            with self._translate("eth_chainId"):
                self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def token_name(self) -> str:
        if self._token_name is None:
            self._token_name = str(self.call("name"))
        return self._token_name

    # ------------------------------------------------------------------ boundary

    @contextlib.contextmanager
    def _translate(self, function: str) -> Iterator[None]:
        try:
            yield
        except ContractLogicError as exc:
            data = _revert_data(exc)
            revert = self.artifact.decode_revert(data) if data else None
            if revert is None and exc.message:
                revert = DecodedRevert("Error", {"message": str(exc.message)})
            raise _reverted(revert, function) from exc
        except Web3RPCError as exc:
            data = _revert_data(exc)
            if data:
                raise _reverted(self.artifact.decode_revert(data), function) from exc
            raise ChainUnavailable(f"{function}: {exc.message}") from exc
        except (requests.RequestException, OSError, Web3Exception) as exc:
            raise ChainUnavailable(f"{function}: {exc}") from exc
        except Exception as exc:
            # The in-process chain (eth-tester) raises its own exceptions, not RPC errors.
            if not type(exc).__module__.startswith(_IN_PROCESS_ERROR_MODULES):
                raise
            if type(exc).__name__ == "TransactionFailed":
                data = _tester_revert_data(exc)
                revert = self.artifact.decode_revert(data) if data else None
                raise _reverted(revert, function) from exc
            raise ChainUnavailable(f"{function}: {exc}") from exc

    # ------------------------------------------------------------------ reads

    def call(self, function: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        """Call a view function of the contract (``block``: number, hash or tag)."""
        with self._translate(function):
            return getattr(self._contract.functions, function)(*args).call(block_identifier=block)

    def block_number(self) -> int:
        with self._translate("eth_blockNumber"):
            return int(self.w3.eth.block_number)

    def total_supply(self, block: BlockIdentifier = "latest") -> int:
        return int(self.call("totalSupply", block=block))

    def balance_of(self, account: str, block: BlockIdentifier = "latest") -> int:
        return int(self.call("balanceOf", _checksum(account), block=block))

    def reserve(self, block: BlockIdentifier = "latest") -> int:
        return int(self.call("reserve", block=block))

    def latest_attestation(self, block: BlockIdentifier = "latest") -> LatestAttestation:
        reserve, timestamp, sequence, max_age = self.call("latestAttestation", block=block)
        return LatestAttestation(int(reserve), int(timestamp), int(sequence), int(max_age))

    def log_anchor(self, block: BlockIdentifier = "latest") -> LogAnchor:
        size, root = self.call("logAnchor", block=block)
        return LogAnchor(int(size), bytes(root))

    def is_request_used(self, request_id: bytes, block: BlockIdentifier = "latest") -> bool:
        return bool(self.call("isRequestUsed", _request_id(request_id), block=block))

    def has_role(self, role: bytes, account: str) -> bool:
        return bool(self.call("hasRole", role, _checksum(account)))

    def logs(
        self, event: str, from_block: int, to_block: int | str = "latest"
    ) -> list[dict[str, Any]]:
        """Decoded logs of ``event`` in the inclusive block range: each has ``args``,
        ``blockNumber``, ``transactionHash``, ``logIndex``, ... (web3's event data)."""
        with self._translate("eth_getLogs"):
            found = getattr(self._contract.events, event)().get_logs(
                from_block=from_block, to_block=to_block
            )
        return [dict(log) for log in found]

    def redeemed_events(
        self, from_block: int, to_block: int | str = "latest"
    ) -> list[RedeemedEvent]:
        """``Redeemed`` logs in the inclusive block range, in chain order."""
        with self._translate("eth_getLogs"):
            logs = self._contract.events.Redeemed().get_logs(
                from_block=from_block, to_block=to_block
            )
        return [
            RedeemedEvent(
                tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
                log_index=int(log["logIndex"]),
                block_number=int(log["blockNumber"]),
                block_hash=HexBytes(log["blockHash"]).to_0x_hex(),
                redeemer=to_checksum_address(log["args"]["from"]),
                amount=int(log["args"]["amount"]),
                dt_wallet_ref=str(log["args"]["dtWalletRef"]),
            )
            for log in logs
        ]

    def minted_by_request(self, request_id: bytes, from_block: int = 0) -> MintedEvent | None:
        """The ``Minted`` log of ``request_id`` (indexed: one ``eth_getLogs``), if any."""
        with self._translate("eth_getLogs"):
            logs = self._contract.events.Minted().get_logs(
                from_block=from_block,
                to_block="latest",
                argument_filters={"requestId": _request_id(request_id)},
            )
        for log in logs:
            return MintedEvent.of(log)
        return None

    def minted_events(self, from_block: int, to_block: int | str = "latest") -> list[MintedEvent]:
        """``Minted`` logs in the inclusive block range, in chain order."""
        with self._translate("eth_getLogs"):
            logs = self._contract.events.Minted().get_logs(from_block=from_block, to_block=to_block)
        return [MintedEvent.of(log) for log in logs]

    def block_hash(self, number: int) -> str | None:
        """The hash of block ``number`` on the node's current chain (None beyond its head)."""
        with self._translate("eth_getBlockByNumber"):
            try:
                block = self.w3.eth.get_block(number)
            except BlockNotFound:
                return None
        return HexBytes(block["hash"]).to_0x_hex()

    def block_timestamp(self, block: BlockIdentifier = "latest") -> int:
        with self._translate("eth_getBlockByNumber"):
            return int(self.w3.eth.get_block(block)["timestamp"])

    def paused_or_blocklisted(self, account: str) -> tuple[bool, bool]:
        """``(paused(), isBlocklisted(account))`` with two raw ``eth_call``s (no ABI lookups:
        this runs before every mint)."""
        word = bytes(12) + bytes.fromhex(_checksum(account)[2:])
        calls = [
            {"to": self.address, "data": "0x" + _PAUSED.hex()},
            {"to": self.address, "data": "0x" + (_IS_BLOCKLISTED + word).hex()},
        ]
        provider = self.w3.provider
        if isinstance(provider, HTTPProvider):  # one HTTP round trip for both
            with self._translate("eth_call"):
                answers = provider.make_batch_request(
                    [(RPCEndpoint("eth_call"), [c, "latest"]) for c in calls]
                )
            if isinstance(answers, list) and all("result" in a for a in answers):
                paused, blocked = (int(str(a["result"]), 16) for a in answers)
                return paused != 0, blocked != 0
        with self._translate("eth_call"):
            results = [self.w3.eth.call(c) for c in calls]  # type: ignore[arg-type]
        return tuple(int.from_bytes(r, "big") != 0 for r in results)  # type: ignore[return-value]

    # ------------------------------------------------------------------ writes

    def deploy(
        self,
        deployer: LocalAccount,
        *,
        name: str = "Digital Tenge KZT",
        symbol: str = "KZTD",
        max_attestation_age: int = 86_400,
        admin: str | None = None,
        minter: str | None = None,
        pauser: str | None = None,
        blocklister: str | None = None,
        attestor: str | None = None,
    ) -> ChecksumAddress:
        """Deploy a new contract and point this client at it. Roles left ``None`` stay empty,
        except ``admin``, which defaults to the deployer."""
        zero = "0x" + "00" * 20
        types = [_canonical(p) for p in self._constructor_inputs()]
        args = [
            name,
            symbol,
            max_attestation_age,
            _checksum(admin or deployer.address),
            _checksum(minter or zero),
            _checksum(pauser or zero),
            _checksum(blocklister or zero),
            _checksum(attestor or zero),
        ]
        data = self.artifact.bytecode + abi_encode(types, args)
        result = self._send(deployer, None, data, "constructor")
        if result.contract_address is None:
            raise ChainUnavailable("deployment receipt has no contract address")
        self.address = result.contract_address
        return result.contract_address

    def transact(self, sender: LocalAccount, function: str, *args: Any) -> TxResult:
        """Send a transaction calling ``function(*args)`` on the contract, signed by ``sender``."""
        data = self._encode(function, args)
        return self._send(sender, self.address, data, function)

    def estimate_gas(self, sender: str, function: str, *args: Any) -> int:
        """Gas ``function(*args)`` would use if sent by ``sender`` now (raises if it reverts)."""
        tx: TxParams = {
            "from": _checksum(sender),
            "to": self.address,
            "data": HexBytes(self._encode(function, args)),
        }
        with self._translate(function):
            return int(self.w3.eth.estimate_gas(tx))

    def mint(self, minter: LocalAccount, to: str, amount: int, request_id: bytes) -> TxResult:
        """Mint ``amount`` tiyn to ``to``, once per 32-byte ``request_id``."""
        _positive(amount)
        return self.transact(minter, "mint", _checksum(to), amount, _request_id(request_id))

    def redeem(self, holder: LocalAccount, amount: int, dt_wallet_ref: str) -> TxResult:
        """Burn ``amount`` of ``holder``'s tokens for DT paid to ``dt_wallet_ref``."""
        _positive(amount)
        if not dt_wallet_ref or len(dt_wallet_ref.encode()) > 64:
            raise InvalidChainInput("dt_wallet_ref must be 1 to 64 bytes of UTF-8")
        return self.transact(holder, "redeem", amount, dt_wallet_ref)

    def transfer(self, holder: LocalAccount, to: str, amount: int) -> TxResult:
        return self.transact(holder, "transfer", _checksum(to), amount)

    def sign_attestation(self, attestor: LocalAccount, attestation: Attestation) -> bytes:
        return sign_attestation(
            attestor,
            attestation,
            token_name=self.token_name(),
            chain_id=self.chain_id,
            contract=self.address,
        )

    def post_attestation(
        self,
        sender: LocalAccount,
        attestation: Attestation,
        *,
        attestor: LocalAccount | None = None,
        signature: bytes | None = None,
    ) -> TxResult:
        return self.wait(
            self.submit_attestation(sender, attestation, attestor=attestor, signature=signature)
        )

    def submit_attestation(
        self,
        sender: LocalAccount,
        attestation: Attestation,
        *,
        attestor: LocalAccount | None = None,
        signature: bytes | None = None,
        gas: int | None = None,
    ) -> SubmittedTx:
        """Post ``attestation`` with ``signature``, or signed here by ``attestor``. Anyone may
        send it; the contract checks the signer holds ATTESTOR_ROLE."""
        if signature is None:
            if attestor is None:
                raise InvalidChainInput("post_attestation needs an attestor key or a signature")
            signature = self.sign_attestation(attestor, attestation)
        if len(attestation.wallet_ref_hash) != 32 or len(attestation.log_root) != 32:
            raise InvalidChainInput("wallet_ref_hash and log_root must be 32 bytes")
        return self.submit(
            sender,
            "postAttestation",
            attestation.reserve,
            attestation.sequence,
            attestation.timestamp,
            attestation.wallet_ref_hash,
            attestation.log_size,
            attestation.log_root,
            signature,
            gas=gas,
        )

    # ------------------------------------------------------------------ sending

    def _constructor_inputs(self) -> Sequence[dict[str, Any]]:
        for item in self.artifact.abi:
            if item.get("type") == "constructor":
                return list(item["inputs"])
        return []

    def _encode(self, function: str, args: Sequence[Any]) -> bytes:
        try:
            encoded = self._abi_contract.encode_abi(function, args=list(args))
        except (Web3Exception, TypeError, ValueError) as exc:
            raise InvalidChainInput(f"cannot encode {function}{tuple(args)!r}: {exc}") from exc
        return bytes(HexBytes(encoded))

    def _fees(self) -> dict[str, int]:
        cached = self._fee_cache
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        fees = self._read_fees()
        if self.fee_cache_seconds > 0:
            self._fee_cache = (time.monotonic() + self.fee_cache_seconds, fees)
        return fees

    def _read_fees(self) -> dict[str, int]:
        with self._translate("fees"):
            base_fee = self.w3.eth.get_block("pending").get("baseFeePerGas")
            if base_fee is None:
                return {"gasPrice": int(self.w3.eth.gas_price)}
            if self._priority_fee is None:
                try:
                    self._priority_fee = int(self.w3.eth.max_priority_fee)
                except (Web3Exception, ValueError):
                    self._priority_fee = 10**9
        return {
            "maxFeePerGas": 2 * int(base_fee) + self._priority_fee,
            "maxPriorityFeePerGas": self._priority_fee,
        }

    def submit(
        self, sender: LocalAccount, function: str, *args: Any, gas: int | None = None
    ) -> SubmittedTx:
        """Sign and send ``function(*args)`` without waiting: pass the result to :meth:`wait`.
        Lets a caller record the transaction hash before the receipt arrives. With ``gas``,
        no estimate first: a call that reverts is then mined as failed (and :meth:`wait`
        raises), so pass it only where a revert is unlikely and harmless."""
        data = self._encode(function, args)
        return self._submit(sender, self.address, data, function, gas)

    def wait(self, submitted: SubmittedTx, timeout: float | None = None) -> TxResult:
        """Wait for a submitted transaction's receipt and confirmations (at most ``timeout``
        seconds, default ``receipt_timeout``: then :class:`TransactionNotConfirmed`)."""
        return self._await(
            bytes(HexBytes(submitted.tx_hash)), submitted.function, submitted.tx, timeout
        )

    def _send(
        self, sender: LocalAccount, to: ChecksumAddress | None, data: bytes, function: str
    ) -> TxResult:
        return self.wait(self._submit(sender, to, data, function))

    def _submit(
        self,
        sender: LocalAccount,
        to: ChecksumAddress | None,
        data: bytes,
        function: str,
        gas_limit: int | None = None,
    ) -> SubmittedTx:
        tx: dict[str, Any] = {"from": sender.address, "data": HexBytes(data), "value": 0}
        if to is not None:
            tx["to"] = to
        if gas_limit is None:
            with self._translate(function):
                gas = int(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
            gas_limit = int(gas * self.gas_margin)
        tx.pop("from")
        tx.update(self._fees())
        tx["gas"] = gas_limit
        tx["chainId"] = self.chain_id

        attempts = 3
        for attempt in range(attempts):
            try:
                with self.nonces.sending(sender.address) as nonce:
                    tx["nonce"] = nonce
                    signed = sender.sign_transaction(tx)
                    with self._translate(function):
                        self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except ChainUnavailable as exc:
                message = str(exc)
                if _is_already_known(message):
                    break  # an earlier attempt with these bytes got through: wait for it
                if _is_nonce_error(message) and attempt + 1 < attempts:
                    continue  # another sender used the nonce: the next attempt re-reads it
                raise
            break
        # The sender goes back in: explaining a failure replays the call as it was sent.
        return SubmittedTx(
            HexBytes(signed.hash).to_0x_hex(), function, {**tx, "from": sender.address}
        )

    def _await(
        self, tx_hash: bytes, function: str, tx: dict[str, Any], timeout: float | None = None
    ) -> TxResult:
        deadline = time.monotonic() + (self.receipt_timeout if timeout is None else timeout)
        while True:
            try:
                receipt = self.w3.eth.wait_for_transaction_receipt(
                    HexBytes(tx_hash),
                    timeout=max(deadline - time.monotonic(), 0.001),
                    poll_latency=self.poll_latency,
                )
            except TimeExhausted as exc:
                raise TransactionNotConfirmed(
                    f"{function}: no receipt for {HexBytes(tx_hash).to_0x_hex()}"
                ) from exc
            except (requests.RequestException, OSError, Web3Exception) as exc:
                raise ChainUnavailable(f"{function}: {exc}") from exc
            block_number = int(receipt["blockNumber"])
            if self._confirmed(block_number, deadline, tx_hash, HexBytes(receipt["blockHash"])):
                break
            # The block was reorganised away: wait for the transaction's new inclusion.
        if receipt["status"] != 1:
            raise self._explain_failure(tx, block_number, function)
        address = receipt.get("contractAddress")
        return TxResult(
            tx_hash=HexBytes(tx_hash).to_0x_hex(),
            block_number=block_number,
            block_hash=HexBytes(receipt["blockHash"]).to_0x_hex(),
            gas_used=int(receipt["gasUsed"]),
            contract_address=to_checksum_address(address) if address else None,
        )

    def _confirmed(
        self, block_number: int, deadline: float, tx_hash: bytes, block_hash: HexBytes
    ) -> bool:
        if self.confirmations == 1:
            return True
        target = block_number + self.confirmations - 1
        with self._translate("eth_blockNumber"):
            while self.w3.eth.block_number < target:
                if time.monotonic() > deadline:
                    raise TransactionNotConfirmed(
                        f"{HexBytes(tx_hash).to_0x_hex()} has fewer than "
                        f"{self.confirmations} confirmations"
                    )
                time.sleep(self.poll_latency)
            try:
                again = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return False
        return HexBytes(again["blockHash"]) == block_hash

    def _explain_failure(
        self, tx: dict[str, Any], block_number: int, function: str
    ) -> ContractReverted:
        """A mined transaction failed: replay it as a call on its parent block for the reason."""
        call: dict[str, Any] = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            with self._translate(function):
                self.w3.eth.call(call, block_identifier=max(block_number - 1, 0))  # type: ignore[arg-type]
        except ContractReverted as exc:
            return exc
        except ChainUnavailable:
            pass
        return _reverted(None, function)


# ---------------------------------------------------------------------------------------- helpers


def _canonical(param: dict[str, Any]) -> str:
    return str(param["type"])


def _checksum(address: str) -> ChecksumAddress:
    try:
        return to_checksum_address(address)
    except (ValueError, TypeError) as exc:
        raise InvalidChainInput(f"not an address: {address!r}") from exc


def _request_id(request_id: bytes) -> bytes:
    if not isinstance(request_id, bytes | bytearray) or len(request_id) != 32:
        raise InvalidChainInput("a mint request id is exactly 32 bytes")
    return bytes(request_id)


def _positive(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidChainInput(f"amount must be a positive integer of tiyn, got {amount!r}")


def http_web3(rpc_url: str, timeout: float = 30.0) -> Web3:
    """A ``Web3`` over HTTP tuned for many small calls: the chain id (which web3's validation
    asks for before every transaction call) is cached, and proxy settings are read from the
    environment once instead of on every request."""
    session = requests.Session()
    session.proxies = dict(requests.utils.get_environ_proxies(rpc_url))
    session.trust_env = False
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        session=session,
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    return Web3(provider)


def account_from_key(private_key: str | bytes) -> LocalAccount:
    """A local signing account from a hex (or raw) private key."""
    try:
        account: LocalAccount = Account.from_key(private_key)
    except (ValueError, TypeError) as exc:
        raise InvalidChainInput("not a valid private key") from exc
    return account


BlockTag = Literal["latest", "pending", "safe", "finalized", "earliest"]

__all__ = [
    "AccountBlocked",
    "Attestation",
    "AttestationRejected",
    "ChainUnavailable",
    "ContractPaused",
    "ContractReverted",
    "InvalidChainInput",
    "LatestAttestation",
    "LogAnchor",
    "MintRequestAlreadyUsed",
    "MintedEvent",
    "MissingRole",
    "NonceAllocator",
    "RedeemedEvent",
    "ReserveGuardRefused",
    "StablecoinChain",
    "SubmittedTx",
    "TransactionNotConfirmed",
    "TxResult",
    "account_from_key",
    "attestation_typed_data",
    "http_web3",
    "sign_attestation",
]

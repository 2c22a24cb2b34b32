"""The stablecoin contract over any EVM JSON-RPC endpoint (or the in-process chain).

:class:`StablecoinChain` encodes the contract's calls and reads its state and logs; sending is
:mod:`gateway.stablecoin.transactions`' (signed locally, nonces in order, receipts awaited), and
every error is one of :mod:`gateway.stablecoin.chain_errors`' (nothing from web3 escapes).
Values it returns are :mod:`gateway.stablecoin.chain_values`'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal, Unpack

import requests
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import BlockNotFound, Web3Exception
from web3.providers.rpc import HTTPProvider
from web3.types import BlockIdentifier, RPCEndpoint, TxParams

from gateway.config import StablecoinSettings
from gateway.stablecoin.chain_errors import ChainUnavailable, InvalidChainInput, translating
from gateway.stablecoin.chain_values import (
    Attestation,
    LatestAttestation,
    LogAnchor,
    MintedEvent,
    RedeemedEvent,
    SubmittedTx,
    TxResult,
    sign_attestation,
)
from gateway.stablecoin.contract import ContractArtifact, load_artifact
from gateway.stablecoin.transactions import SendOptions, TransactionSender

_PAUSED = keccak(text="paused()")[:4]
_IS_BLOCKLISTED = keccak(text="isBlocklisted(address)")[:4]


# ---------------------------------------------------------------------------------------- client


class StablecoinChain:
    """The stablecoin contract at ``address`` on the chain behind ``w3``.

    ``sending`` (``confirmations``, ``poll_latency``, ``receipt_timeout``, ``gas_margin``,
    ``fee_cache_seconds``, ``chain_id``: :class:`~gateway.stablecoin.transactions.SendOptions`)
    tunes how its transactions are sent and awaited, with the defaults of
    :class:`~gateway.stablecoin.transactions.TransactionSender`, which checks them. Making a
    client asks the node nothing.
    """

    def __init__(
        self,
        w3: Web3,
        address: str | None = None,
        *,
        artifact: ContractArtifact | None = None,
        **sending: Unpack[SendOptions],
    ) -> None:
        self.w3 = w3
        self.artifact = artifact or load_artifact()
        self.transactions = TransactionSender(w3, self.artifact, **sending)
        self._address: ChecksumAddress | None = None
        self._token_name: str | None = None
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
        """A client per ``settings`` (rpc_url, contract_address, confirmations, chain_id). Pass
        ``w3`` for the embedded dev chain (empty ``rpc_url``), e.g. ``start_devchain().w3``."""
        if w3 is None:
            if not settings.rpc_url:
                raise InvalidChainInput("no rpc_url: start a dev chain and pass its w3")
            w3 = http_web3(settings.rpc_url)
        kwargs.setdefault("confirmations", settings.confirmations)
        kwargs.setdefault("chain_id", settings.chain_id)
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
        return self.transactions.chain_id

    @property
    def confirmations(self) -> int:
        return self.transactions.confirmations

    def token_name(self) -> str:
        if self._token_name is None:
            self._token_name = str(self.call("name"))
        return self._token_name

    # ------------------------------------------------------------------ boundary

    def _translate(self, function: str) -> contextlib.AbstractContextManager[None]:
        return translating(self.artifact, function)

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
        return [RedeemedEvent.of(log) for log in logs]

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

    def submit(
        self, sender: LocalAccount, function: str, *args: Any, gas: int | None = None
    ) -> SubmittedTx:
        """Sign and send ``function(*args)`` without waiting: pass the result to :meth:`wait`.
        Lets a caller record the transaction hash before the receipt arrives. With ``gas``,
        no estimate first: a call that reverts is then mined as failed (and :meth:`wait`
        raises), so pass it only where a revert is unlikely and harmless."""
        data = self._encode(function, args)
        return self.transactions.submit(sender, self.address, data, function, gas)

    def wait(self, submitted: SubmittedTx, timeout: float | None = None) -> TxResult:
        """Wait for a submitted transaction's receipt and confirmations (at most ``timeout``
        seconds, default ``receipt_timeout``: then :class:`TransactionNotConfirmed`)."""
        return self.transactions.wait(submitted, timeout)

    def _send(
        self, sender: LocalAccount, to: ChecksumAddress | None, data: bytes, function: str
    ) -> TxResult:
        return self.transactions.send(sender, to, data, function)

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

__all__ = ["BlockTag", "StablecoinChain", "account_from_key", "http_web3"]

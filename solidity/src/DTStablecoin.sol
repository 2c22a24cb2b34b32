// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title Reserve-guarded KZT stablecoin backed by Digital Tenge
/// @notice 1 token unit = 1 tiyn (decimals() = 2, 1 KZT = 100 tiyn). The supply can never exceed
/// the DT reserve of the latest attestation signed by an attestor (EIP-712), and minting stops
/// when that attestation is older than `maxAttestationAge`. Each attestation also anchors the
/// proof-of-collateral log: it carries the tree size and root hash of a signed checkpoint whose
/// entries show the attested reserve, and the contract keeps the latest (size, root), which
/// never moves back, so the chain holds one history of the log for everyone.
/// @dev Gas design (see docs/stablecoin-contract.md): Pausable's `_paused` flag, the attested
/// reserve, its timestamp and sequence and the max age share ONE storage slot, so a mint reads it
/// cold once; used request ids live in a bitmap (256 ids per word), so ids allocated sequentially
/// pay a warm-value SSTORE instead of a fresh one. Keep `Pausable` the LAST base contract and the
/// packed fields the FIRST state variables here: the layout test checks they share a slot.
contract DTStablecoin is ERC20Permit, AccessControl, Pausable {
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    bytes32 public constant BLOCKLISTER_ROLE = keccak256("BLOCKLISTER_ROLE");
    bytes32 public constant ATTESTOR_ROLE = keccak256("ATTESTOR_ROLE");

    /// @notice EIP-712 type of a reserve attestation. `walletRefHash` is keccak256 of the
    /// segregated DT wallet's reference (UTF-8), binding the reserve to one wallet; `logSize` and
    /// `logRoot` are the collateral log's tree size and RFC 9162 root hash at which the log's
    /// `dt` entries show `reserve` as the wallet's balance.
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "ReserveAttestation(uint256 reserve,uint256 sequence,uint256 timestamp,bytes32 walletRefHash,uint256 logSize,bytes32 logRoot)"
    );

    /// @notice RFC 9162 root of the empty tree (SHA-256 of no bytes): the log anchor until the
    /// first attestation.
    bytes32 public constant EMPTY_LOG_ROOT = 0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855;

    /// @notice How far an attestation's timestamp may be ahead of the block's (clock skew).
    uint256 public constant MAX_FUTURE_SKEW = 60;

    /// @notice Longest accepted `dtWalletRef` in `redeem`, in bytes.
    uint256 public constant MAX_WALLET_REF_LENGTH = 64;

    // ---- packed slot, shared with Pausable._paused (1 + 12 + 5 + 8 + 4 = 30 bytes) ----
    uint96 private _reserve;
    uint40 private _attestedAt;
    uint64 private _attestationSequence;
    uint32 private _maxAttestationAge;
    // ------------------------------------------------------------------------------------

    /// @dev Used mint request ids: bit (id & 0xff) of word (id >> 8).
    mapping(uint256 word => uint256 bits) private _usedRequests;
    mapping(address account => bool) private _blocklisted;

    /// @dev The collateral log's latest anchored tree. Not read by mint, so kept out of the packed
    /// slot; the root starts as the empty tree's (non-zero), so an attestation rewrites a
    /// non-zero slot instead of filling a fresh one.
    uint64 private _logSize;
    bytes32 private _logRoot = EMPTY_LOG_ROOT;

    event Minted(address indexed to, uint256 amount, bytes32 indexed requestId);
    event Redeemed(address indexed from, uint256 amount, string dtWalletRef);
    event AttestationPosted(
        uint256 indexed sequence,
        uint256 reserve,
        uint256 timestamp,
        bytes32 walletRefHash,
        uint256 logSize,
        bytes32 logRoot,
        address indexed attestor
    );
    event Blocklisted(address indexed account, address indexed by);
    event Unblocklisted(address indexed account, address indexed by);
    event MaxAttestationAgeChanged(uint256 previousAge, uint256 newAge, address indexed by);

    error MintRequestAlreadyUsed(bytes32 requestId);
    error ReserveExceeded(uint256 supplyAfter, uint256 reserve);
    error AttestationStale(uint256 timestamp, uint256 maxAge);
    error AttestationFromFuture(uint256 timestamp);
    error AttestationReplayed(uint256 sequence, uint256 latestSequence);
    error AttestationSignerNotAttestor(address signer);
    error AttestationValueTooLarge();
    error LogAnchorBehind(uint256 logSize, uint256 latestLogSize);
    error LogAnchorConflict(uint256 logSize, bytes32 logRoot, bytes32 latestLogRoot);
    error AccountBlocklisted(address account);
    error InvalidWalletRef();
    error ZeroAmount();
    error InvalidMaxAge();

    /// @param maxAttestationAge_ seconds after its timestamp that an attestation still allows
    /// minting. Role holders may be the zero address (no holder yet); `admin` may not.
    constructor(
        string memory name_,
        string memory symbol_,
        uint32 maxAttestationAge_,
        address admin,
        address minter,
        address pauser,
        address blocklister,
        address attestor
    ) ERC20(name_, symbol_) ERC20Permit(name_) {
        if (maxAttestationAge_ == 0) revert InvalidMaxAge();
        _maxAttestationAge = maxAttestationAge_;
        emit MaxAttestationAgeChanged(0, maxAttestationAge_, _msgSender());
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (minter != address(0)) _grantRole(MINTER_ROLE, minter);
        if (pauser != address(0)) _grantRole(PAUSER_ROLE, pauser);
        if (blocklister != address(0)) _grantRole(BLOCKLISTER_ROLE, blocklister);
        if (attestor != address(0)) _grantRole(ATTESTOR_ROLE, attestor);
    }

    /// @notice 1 unit = 1 tiyn.
    function decimals() public pure override returns (uint8) {
        return 2;
    }

    // ------------------------------------------------------------------ mint / redeem

    /// @notice Mint `amount` tiyn to `to`, once per `requestId`, within the attested reserve.
    function mint(address to, uint256 amount, bytes32 requestId) external onlyRole(MINTER_ROLE) {
        if (amount == 0) revert ZeroAmount();
        uint256 word = uint256(requestId) >> 8;
        uint256 bit = 1 << (uint256(requestId) & 0xff);
        uint256 bits = _usedRequests[word];
        if (bits & bit != 0) revert MintRequestAlreadyUsed(requestId);
        _usedRequests[word] = bits | bit;

        uint256 attestedAt = _attestedAt;
        uint256 maxAge = _maxAttestationAge;
        if (block.timestamp > attestedAt + maxAge) revert AttestationStale(attestedAt, maxAge);
        uint256 supplyAfter = totalSupply() + amount;
        if (supplyAfter > _reserve) revert ReserveExceeded(supplyAfter, _reserve);

        _mint(to, amount);
        emit Minted(to, amount, requestId);
    }

    /// @notice Burn `amount` of the caller's tokens; the gateway pays the same amount of DT from
    /// the segregated wallet to the DT wallet `dtWalletRef` once the burn is confirmed.
    function redeem(uint256 amount, string calldata dtWalletRef) external {
        if (amount == 0) revert ZeroAmount();
        uint256 refLength = bytes(dtWalletRef).length;
        if (refLength == 0 || refLength > MAX_WALLET_REF_LENGTH) revert InvalidWalletRef();
        _burn(_msgSender(), amount);
        emit Redeemed(_msgSender(), amount, dtWalletRef);
    }

    /// @notice Whether a mint with `requestId` has happened.
    function isRequestUsed(bytes32 requestId) external view returns (bool) {
        return _usedRequests[uint256(requestId) >> 8] & (1 << (uint256(requestId) & 0xff)) != 0;
    }

    // ------------------------------------------------------------------ attestations

    /// @notice Record a reserve attestation signed (EIP-712) by an ATTESTOR_ROLE holder. Anyone
    /// may post it. It must be fresh, not from the future, and newer (by sequence) than the last;
    /// its log anchor must not be behind the stored one: a smaller tree size is refused, and so
    /// is another root for the same size (two histories of one log).
    function postAttestation(
        uint256 reserve,
        uint256 sequence,
        uint256 timestamp,
        bytes32 walletRefHash,
        uint256 logSize,
        bytes32 logRoot,
        bytes calldata signature
    ) external {
        if (
            reserve > type(uint96).max || sequence > type(uint64).max || timestamp > type(uint40).max
                || logSize > type(uint64).max
        ) {
            revert AttestationValueTooLarge();
        }
        uint256 latest = _attestationSequence;
        if (sequence <= latest) revert AttestationReplayed(sequence, latest);
        if (timestamp > block.timestamp + MAX_FUTURE_SKEW) revert AttestationFromFuture(timestamp);
        uint256 maxAge = _maxAttestationAge;
        if (block.timestamp > timestamp + maxAge) revert AttestationStale(timestamp, maxAge);
        uint256 latestLogSize = _logSize;
        if (logSize < latestLogSize) revert LogAnchorBehind(logSize, latestLogSize);
        if (logSize == latestLogSize) {
            bytes32 latestLogRoot = _logRoot;
            if (logRoot != latestLogRoot) revert LogAnchorConflict(logSize, logRoot, latestLogRoot);
        }

        address signer = ECDSA.recover(
            _attestationDigest(reserve, sequence, timestamp, walletRefHash, logSize, logRoot), signature
        );
        if (!hasRole(ATTESTOR_ROLE, signer)) revert AttestationSignerNotAttestor(signer);

        _reserve = uint96(reserve);
        _attestedAt = uint40(timestamp);
        _attestationSequence = uint64(sequence);
        if (logSize != latestLogSize) {
            _logSize = uint64(logSize);
            _logRoot = logRoot;
        }
        emit AttestationPosted(sequence, reserve, timestamp, walletRefHash, logSize, logRoot, signer);
    }

    /// @notice The latest attestation: reserve (tiyn), timestamp, sequence, and the max age.
    function latestAttestation()
        external
        view
        returns (uint256 reserve, uint256 timestamp, uint256 sequence, uint256 maxAge)
    {
        return (_reserve, _attestedAt, _attestationSequence, _maxAttestationAge);
    }

    /// @notice The attested reserve in tiyn (zero before the first attestation).
    function reserve() external view returns (uint256) {
        return _reserve;
    }

    /// @notice The collateral log's latest anchored tree: its size and RFC 9162 root hash.
    function logAnchor() external view returns (uint256 size, bytes32 root) {
        return (_logSize, _logRoot);
    }

    /// @notice The EIP-712 digest an attestor signs for these values.
    function attestationDigest(
        uint256 reserve_,
        uint256 sequence,
        uint256 timestamp,
        bytes32 walletRefHash,
        uint256 logSize,
        bytes32 logRoot
    ) external view returns (bytes32) {
        return _attestationDigest(reserve_, sequence, timestamp, walletRefHash, logSize, logRoot);
    }

    function _attestationDigest(
        uint256 reserve_,
        uint256 sequence,
        uint256 timestamp,
        bytes32 walletRefHash,
        uint256 logSize,
        bytes32 logRoot
    ) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(ATTESTATION_TYPEHASH, reserve_, sequence, timestamp, walletRefHash, logSize, logRoot)
            )
        );
    }

    // ------------------------------------------------------------------ admin

    function setMaxAttestationAge(uint32 newAge) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newAge == 0) revert InvalidMaxAge();
        emit MaxAttestationAgeChanged(_maxAttestationAge, newAge, _msgSender());
        _maxAttestationAge = newAge;
    }

    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    function blocklist(address account) external onlyRole(BLOCKLISTER_ROLE) {
        _blocklisted[account] = true;
        emit Blocklisted(account, _msgSender());
    }

    function unblocklist(address account) external onlyRole(BLOCKLISTER_ROLE) {
        _blocklisted[account] = false;
        emit Unblocklisted(account, _msgSender());
    }

    function isBlocklisted(address account) external view returns (bool) {
        return _blocklisted[account];
    }

    // ------------------------------------------------------------------ hooks

    /// @dev Every balance change (transfer, mint, burn) passes here: refuse it while paused or
    /// when either side is blocklisted.
    function _update(address from, address to, uint256 value) internal override whenNotPaused {
        if (from != address(0) && _blocklisted[from]) revert AccountBlocklisted(from);
        if (to != address(0) && _blocklisted[to]) revert AccountBlocklisted(to);
        super._update(from, to, value);
    }

    /// @dev A blocklisted spender cannot move anyone's tokens, even with an unlimited allowance.
    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        if (_blocklisted[_msgSender()]) revert AccountBlocklisted(_msgSender());
        return super.transferFrom(from, to, value);
    }

    /// @dev Blocklisted owners or spenders cannot grant allowances (approve, permit); lowering an
    /// allowance to zero stays possible.
    function _approve(address owner, address spender, uint256 value, bool emitEvent) internal override {
        if (value != 0) {
            if (_blocklisted[owner]) revert AccountBlocklisted(owner);
            if (_blocklisted[spender]) revert AccountBlocklisted(spender);
        }
        super._approve(owner, spender, value, emitEvent);
    }
}

"""What the collateral verifier concludes: its exit codes, and the failure that carries one.

Every check the verifier makes fails with its own code, and the message names the exact
failure (entry index, field, what was expected and what was found)::

    code  name                 meaning
    ----  -------------------  -------------------------------------------------------------
       0  OK                   every check passed
       2  USAGE                bad arguments, a malformed --log-key, an unreadable state file
       3  UNREACHABLE          the log or the RPC endpoint did not answer, or answered nonsense
       4  WRONG_LOG            the checkpoint or state file belongs to another log: origin,
                               contract or chain id differ from what was asked for
      10  BAD_SIGNATURE        the checkpoint is not validly signed by the pinned log key
      11  STALE                the checkpoint's timestamp is older than --max-age
      12  TRUNCATED            the log is smaller than it was at the last verified checkpoint
      13  REWRITTEN            the log's tree does not extend the last verified one
      14  ROOT_MISMATCH        the served entries (or tiles) do not hash to the signed root
      15  MALFORMED_ENTRY      an entry is not the canonical encoding of a known entry type
      16  BALANCE              a dt entry's balance (or a statement's reserve) does not follow
                               from the previous balance and the amounts
      17  SUPPLY               a mint/burn entry's supply (or a statement's) does not follow
                               from the previous supply and the amounts
      18  ABOVE_RESERVE        token supply above the DT reserve, in the log or on chain
      19  MISSING_FROM_LOG     a Minted/Redeemed event on chain has no entry in the log
      20  NOT_ON_CHAIN         a mint/burn entry has no matching event on chain
      21  STATEMENT_MISMATCH   a statement's block hash or supply differs from the chain's
      22  OUT_OF_ORDER         mint/burn entries out of chain order, or behind a statement
                               that promised every event up to its block
      23  ANCHOR_MISMATCH      a reserve attestation on chain anchors another root at its log
                               size, or a reserve the log's balance at that size is not
      24  MISSING_COSIGNATURES fewer than --quorum of the --witness keys cosigned the
                               checkpoint (the message names the witnesses missing)
     130  INTERRUPTED          stopped (Ctrl-C) before a run finished; with --watch, the
                               code of the last finished run is kept instead

Any other non-zero code (1) is a bug in the verifier itself.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    USAGE = 2
    UNREACHABLE = 3
    WRONG_LOG = 4
    BAD_SIGNATURE = 10
    STALE = 11
    TRUNCATED = 12
    REWRITTEN = 13
    ROOT_MISMATCH = 14
    MALFORMED_ENTRY = 15
    BALANCE = 16
    SUPPLY = 17
    ABOVE_RESERVE = 18
    MISSING_FROM_LOG = 19
    NOT_ON_CHAIN = 20
    STATEMENT_MISMATCH = 21
    OUT_OF_ORDER = 22
    ANCHOR_MISMATCH = 23
    MISSING_COSIGNATURES = 24
    INTERRUPTED = 130


class Failure(Exception):
    """A check that did not pass: ``code`` is the process's exit code, ``message`` says what
    exactly was wrong, in words a reader can check by hand."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name} ({int(self.code)}): {self.message}"

"""Group commit on real databases: many threads, one committer; every caller's outcome matches
what the ledger holds, and the invariants hold."""

from __future__ import annotations

import random
import threading

from sqlalchemy.engine import Engine

from gateway.errors import GatewayError, TransientError
from gateway.ledger import service
from gateway.ledger.group import GroupCommitter
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, Transfer, WalletKind
from gateway.ledger.store import LedgerUnitOfWork


def test_concurrent_callers_each_get_their_own_outcome(engine: Engine) -> None:
    wallets = ["w0", "w1", "w2"]
    service.apply(
        LedgerUnitOfWork(engine),
        [OpenWallet(w, WalletKind.PARTICIPANT, w) for w in wallets]
        + [Issue(f"fund-{w}", w, 1_000) for w in wallets],
    )
    committer = GroupCommitter(lambda: LedgerUnitOfWork(engine))
    succeeded: dict[str, Transfer] = {}
    refused: dict[str, str] = {}
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        rng = random.Random(n)
        for i in range(60):
            src, dst = rng.sample(wallets, 2)
            op = MakeTransfer(f"t-{n}-{i}", src, dst, rng.randint(1, 400))
            try:
                result = committer.submit(op)
            except TransientError as exc:
                unexpected.append(exc)
            except GatewayError as exc:
                with lock:
                    refused[op.id] = exc.code
            except BaseException as exc:
                unexpected.append(exc)
            else:
                assert isinstance(result, Transfer)
                with lock:
                    succeeded[op.id] = result

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    committer.stop()

    assert not unexpected
    assert set(refused.values()) <= {"AM04"}
    assert committer.operations == len(succeeded) + len(refused) == 480
    uow = LedgerUnitOfWork(engine)
    for transfer_id, transfer in succeeded.items():
        assert service.get_transfer(uow, transfer_id) == transfer
    for transfer_id in refused:
        with uow:
            assert uow.ledger.transfer(transfer_id) is None
    assert service.check_invariants(uow).ok
    assert sum(service.get_wallet(uow, w).posted for w in wallets) == 3_000

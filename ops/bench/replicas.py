"""Gateway replicas for the PvP benchmark (``ops/bench/pvp.py --replicas N``): N ``dt-gateway
serve`` processes on one PostgreSQL database, behind a TCP balancer (``ops/chaos/balancer.py``,
a new connection to each replica in turn) that the connector posts to as the gateway's
endpoint.

The connector maps a network to one endpoint (its registration's, the latest), so the
balancer is that endpoint from the start: the one-replica runs of the same sitting go through
it too. The replicas beyond the first start later (:meth:`Replicas.add`); the connector is
then restarted, so that its kept-alive connections are opened again, spread over them.
"""

from __future__ import annotations

from gateway.messaging.serving import free_port
from ops.chaos.balancer import Balancer
from ops.chaos.processes import Process
from ops.chaos.system import register_gateway
from tests.e2e.pvp.harness import PvPProcesses


class Replicas:
    def __init__(self, world: PvPProcesses, count: int) -> None:
        self.world = world
        self.count = count
        self.extra: list[Process] = []
        self.balancer: Balancer | None = None

    def front(self) -> None:
        """The balancer in front of the harness's gateway, registered at the connector as
        the gateway's endpoint (once the harness has set both up)."""
        world = self.world
        self.balancer = Balancer([world.gateway.port]).start()
        register_gateway(world.conn, self.balancer.url, world.identity.cert_pem)

    def add(self) -> None:
        """Start the other replicas (the harness's gateway settings, a directory each) and put
        them behind the balancer; then restart the connector."""
        assert self.balancer is not None
        world = self.world
        for n in range(2, self.count + 1):
            home = world.tmp / f"replica-{n}"
            home.mkdir(exist_ok=True)
            replica = Process(
                f"replica-{n}",
                ["serve"],
                {**world.gateway_env, "DT_GATEWAY_DATA_DIR": str(home)},
                free_port(),
                world.tmp / f"replica-{n}.log",
                "/health",
            )
            replica.start()
            self.extra.append(replica)
            self.balancer.backends.append(replica.port)
        world.connector.kill()
        world.connector.start()

    def pids(self) -> list[int]:
        """The gateway processes running now."""
        running = [self.world.gateway, *self.extra]
        return [p.proc.pid for p in running if p.proc is not None and p.alive]

    def close(self) -> None:
        for replica in self.extra:
            replica.stop()
        if self.balancer is not None:
            self.balancer.stop()

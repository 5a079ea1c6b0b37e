"""Dynamo's shopping cart: an add is never lost, a concurrent remove is settled by OR-set rules.

    python examples/shopping_cart.py              # starts a 3-node cluster itself, kills a node mid-run
    python examples/shopping_cart.py HOST:PORT... # uses your nodes (nothing is killed)

Two shoppers share one cart (an OR-set, ``Client.sadd``/``srem``/``smembers``), each
through a different node. Halfway through, one node is SIGKILLed. Every add a
shopper saw acknowledged must be in the cart at the end unless that same shopper
removed it afterwards; an add concurrent with a remove of the same item wins
(observed-remove semantics: a remove only takes away the adds it has seen — shown
deterministically by tests/core/test_core_crdt.py::test_or_set_add_wins_over_a_concurrent_remove).
A remove is applied by the replica coordinating it, so a remove sent after a
fail-over to a replica that had not received the add yet leaves the item in:
reported as "removed items still in the cart", never an add lost.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading

from quorumkv import Client
from quorumkv.errors import QuorumKVError

ITEMS_PER_SHOPPER = 30
CART = "cart:alice"


def shopper(addresses: list[str], name: str, halfway: threading.Barrier, acked: set, removed: set,
            failed: list) -> None:
    with Client(addresses, w="QUORUM", r="QUORUM") as c:
        for i in range(ITEMS_PER_SHOPPER):
            if i == ITEMS_PER_SHOPPER // 2:
                halfway.wait()  # both shoppers are here; the node gets killed now
            item = f"{name}-item{i}".encode()
            try:
                c.sadd(CART, item)
                acked.add(item)
                if i % 5 == 4:  # changes their mind about every fifth item
                    c.srem(CART, item)
                    removed.add(item)
            except QuorumKVError as exc:  # e.g. the connection to the killed node: not acked
                failed.append(f"{item}: {exc}")


def run(addresses: list[str], kill=None) -> dict:
    """Run both shoppers; ``kill()`` (optional) is called once both are halfway."""
    acked: dict[str, set] = {"a": set(), "b": set()}
    removed: dict[str, set] = {"a": set(), "b": set()}
    failed: list[str] = []
    halfway = threading.Barrier(2, action=kill)
    # shopper a talks to the first node, b to the second (each falls back to the others)
    order_a = addresses
    order_b = addresses[1:] + addresses[:1]
    threads = [threading.Thread(target=shopper, args=(order_a, "a", halfway, acked["a"], removed["a"], failed)),
               threading.Thread(target=shopper, args=(order_b, "b", halfway, acked["b"], removed["b"], failed))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Client(addresses[1:] + addresses[:1], r="QUORUM") as c:
        cart = c.smembers(CART)
    expected = (acked["a"] - removed["a"]) | (acked["b"] - removed["b"])
    return {"cart": cart, "expected": expected, "lost": expected - cart, "failed": failed,
            "removed_still_there": (removed["a"] | removed["b"]) & cart}


def main(argv: list[str]) -> int:
    if argv:
        result = run(argv)
    else:
        from quorumkv.cli.localcluster import LocalCluster
        from quorumkv.cli.testing import free_base_port

        with tempfile.TemporaryDirectory(prefix="cart-") as tmp:
            cluster = LocalCluster(tmp)
            cluster.create(3, base_port=free_base_port(6), replicas=3)
            cluster.up()
            try:
                victim = cluster.nodes[0]  # shopper a's node: a fails over mid-run
                result = run(cluster.addresses(), kill=lambda: cluster.signal(victim, signal.SIGKILL))
            finally:
                cluster.down()
    print(f"cart holds {len(result['cart'])} items; every acknowledged add kept: {not result['lost']}")
    print(f"adds that failed (node killed mid-request): {len(result['failed'])}")
    print(f"removed items still in the cart (remove did not see the add): {sorted(result['removed_still_there'])}")
    return 1 if result["lost"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

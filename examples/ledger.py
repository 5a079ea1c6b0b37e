"""The seed's ledger, done right: transfers between accounts with compare-and-set.

Starts a 3-node cluster (or uses ``--dir``), opens ``--accounts`` accounts with 100
each, runs ``--clients`` threads doing random transfers for ``--seconds`` while one
node is SIGKILLed a third of the way in and restarted at two thirds, then proves that
the total is unchanged and that no balance ever went negative. Exit 0 when both hold.

Why it is right where read-then-write is not: every change of an account is one
``Client.update(key, fn)`` — a compare-and-set loop over CASPaxos, atomic per key —
and a transfer touches two keys, so it is a small saga whose steps are idempotent
(keyed by the transfer's id) and can be re-run after any failure, including an
"outcome unknown" time-out:

1. debit: if the source has the amount, subtract it and record the transfer as
   *outbound* in the source account (``out[tid] = [dest, amount]``) — atomically;
2. credit: add the amount to the destination unless it already *applied* ``tid``;
3. clear: drop ``tid`` from the source's outbound list.

Money in flight is always visible in some source's ``out``; a recovery pass at the
end (as a restarted client would run) finishes every pending transfer. Invariant:
sum of balances + amounts outbound and not yet applied = the opening total.

    PYTHONPATH=src python examples/ledger.py --accounts 6 --clients 4 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from quorumkv.client import Client  # noqa: E402
from quorumkv.errors import QuorumKVError  # noqa: E402
from quorumkv.cli.localcluster import LocalCluster  # noqa: E402
from quorumkv.cli.testing import free_base_port  # noqa: E402

OPENING_BALANCE = 100
#: Attempts per saga step before the transfer is left for the recovery pass.
STEP_ATTEMPTS_MAX = 20


def acct(i: int) -> str:
    return f"ledger:acct:{i}"


def load(raw: bytes | None) -> dict:
    return json.loads(raw) if raw else {"balance": 0, "out": {}, "applied": []}


def dump(state: dict) -> bytes:
    return json.dumps(state, sort_keys=True).encode()


class Ledger:
    def __init__(self, client: Client) -> None:
        self.c = client
        self.lowest_seen = OPENING_BALANCE  # the lowest balance any step wrote

    def _step(self, key: str, fn) -> dict:
        """Apply ``fn`` to the account atomically; retried (it is idempotent)."""
        last = None
        for _ in range(STEP_ATTEMPTS_MAX):
            try:
                return load(self.c.update(key, lambda raw: dump(fn(load(raw)))))
            except QuorumKVError as exc:  # unavailable, or outcome unknown: run it again
                last = exc
                time.sleep(0.05)
        raise last

    def debit(self, tid: str, src: int, dst: int, amount: int) -> bool:
        def fn(s):
            if tid in s["out"] or s["balance"] < amount:
                return s  # done already, or not enough money: unchanged
            s["balance"] -= amount
            s["out"][tid] = [dst, amount]
            self.lowest_seen = min(self.lowest_seen, s["balance"])
            return s

        return tid in self._step(acct(src), fn)["out"]

    def credit(self, tid: str, dst: int, amount: int) -> None:
        def fn(s):
            if tid not in s["applied"]:
                s["balance"] += amount
                s["applied"].append(tid)
            return s

        self._step(acct(dst), fn)

    def clear(self, tid: str, src: int) -> None:
        def fn(s):
            s["out"].pop(tid, None)
            return s

        self._step(acct(src), fn)

    def transfer(self, src: int, dst: int, amount: int) -> str:
        tid = uuid.uuid4().hex[:12]
        if not self.debit(tid, src, dst, amount):
            return "insufficient"
        self.credit(tid, dst, amount)
        self.clear(tid, src)
        return "done"

    def recover(self, accounts: int) -> int:
        """Finish every transfer still outbound somewhere (what a restarted client does)."""
        finished = 0
        for src in range(accounts):
            state = load(self.c.get(acct(src), default=None, consistency="linearizable"))
            for tid, (dst, amount) in list(state["out"].items()):
                self.credit(tid, dst, amount)
                self.clear(tid, src)
                finished += 1
        return finished


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=6)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--dir", help="use this running cluster (quorumkv cluster up --dir) instead of starting one")
    ap.add_argument("--no-kill", action="store_true", help="do not kill a node mid-run")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    root = None
    if args.dir:
        cluster = LocalCluster(args.dir)
    else:
        root = tempfile.mkdtemp(prefix="qkv-ledger-")
        cluster = LocalCluster(os.path.join(root, "cluster"))
        cluster.create(3, base_port=free_base_port(6), replicas=3, storage="sqlite")
        cluster.up()
    addrs = cluster.addresses()
    try:
        setup = Ledger(Client(addrs))
        for i in range(args.accounts):  # open each account once (absent -> 100)
            setup.c.cas(acct(i), None, dump({"balance": OPENING_BALANCE, "out": {}, "applied": []}))
        opening = sum(load(setup.c.get(acct(i), consistency="linearizable"))["balance"] for i in range(args.accounts))
        print(f"{args.accounts} accounts, opening total {opening}; {args.clients} clients for {args.seconds:g} s")

        stop = threading.Event()
        results = {"done": 0, "insufficient": 0, "left_for_recovery": 0}
        lowest = [OPENING_BALANCE]
        lock = threading.Lock()

        def client_main(p: int) -> None:
            crng = random.Random(rng.random())
            ledger = Ledger(Client(addrs[p % len(addrs):] + addrs[:p % len(addrs)]))
            while not stop.is_set():
                src, dst = crng.sample(range(args.accounts), 2)
                try:
                    outcome = ledger.transfer(src, dst, crng.randint(1, 60))
                except QuorumKVError:
                    outcome = "left_for_recovery"
                with lock:
                    results[outcome] += 1
            with lock:
                lowest[0] = min(lowest[0], ledger.lowest_seen)
            ledger.c.close()

        threads = [threading.Thread(target=client_main, args=(p,)) for p in range(args.clients)]
        for t in threads:
            t.start()
        victim = cluster.nodes[rng.randrange(len(cluster.nodes))]
        if not args.no_kill:
            time.sleep(args.seconds / 3)
            cluster.signal(victim, signal.SIGKILL)
            print(f"killed {victim.id} (SIGKILL)")
            time.sleep(args.seconds / 3)
            while victim.running():
                time.sleep(0.02)
            cluster.start(victim)
            cluster.wait_ready([victim])
            print(f"restarted {victim.id}")
            time.sleep(args.seconds / 3)
        else:
            time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()

        recovered = setup.recover(args.accounts)
        states = [load(setup.c.get(acct(i), consistency="linearizable")) for i in range(args.accounts)]
        balances = [s["balance"] for s in states]
        pending = sum(len(s["out"]) for s in states)
        total = sum(balances)
        print(f"transfers: {results['done']} done, {results['insufficient']} refused (insufficient funds), "
              f"{results['left_for_recovery']} left for recovery; recovery finished {recovered}")
        print(f"balances: {balances}")
        print(f"closing total {total} (opening {opening}); lowest balance ever written {lowest[0]}; "
              f"pending transfers {pending}")
        ok = total == opening and min(balances) >= 0 and lowest[0] >= 0 and pending == 0
        print("LEDGER OK: total unchanged, no balance negative" if ok else "LEDGER BROKEN")
        return 0 if ok else 1
    finally:
        if root is not None:
            cluster.down()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

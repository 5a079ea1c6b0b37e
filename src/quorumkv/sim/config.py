"""What one simulated run is: every knob, and the seed every random choice follows."""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Fault kinds ``--faults`` accepts (comma-separated), see docs/simulator.md.
#: ``join``/``decommission``/``replace`` are ring changes, ``cleanup`` drops leftovers
#: (``quorumkv cleanup``); ``gc`` turns tombstone GC
#: on with a short grace; ``skew`` skews every clock and steps them during the run.
FAULTS = ("loss", "dup", "reorder", "partition", "crash", "crash-all", "skew", "join", "decommission",
          "replace", "cleanup", "gc")
#: Faults that change the ring.
RING_FAULTS = ("join", "decommission", "replace")
#: Seeded bugs the harness can inject, to prove the checkers can fail.
BUGS = ("ack-before-persist", "phantom-ack")
#: The default nemesis set when ``--faults all`` is given.
ALL_FAULTS = FAULTS


@dataclass(frozen=True)
class SimConfig:
    seed: int
    nodes: int = 5
    n: int = 3
    r: int = 2
    w: int = 2
    ops: int = 1_000  # client operations issued (the final verification reads come on top)
    clients: int = 10  # each runs one operation at a time, like a Jepsen process
    keys: int = 10  # small key space: contention is what finds bugs
    read_fraction: float = 0.5
    delete_fraction: float = 0.05  # of the writes
    faults: tuple[str, ...] = ()
    #: Riak's pr/pw on every client request: only primaries count toward R/W. Off
    #: (the default), a sloppy quorum may count fallbacks holding hints, and then
    #: R + W > N no longer guarantees that a read meets the last acked write.
    primary_only: bool = False
    profile: str = "lnkd-ssd"  # a quorumkv.analysis.pbs profile name or spec
    bug: str | None = None
    #: A client waits 0..this between operations. None: 5 ms, or 50 ms when ring
    #: changes are among the faults — a join settles for SIM_SETTLE_MS before it
    #: streams, so the workload must last long enough for ring changes to start
    #: *and* finish under load (1,000 ops by 10 clients then span ~3 virtual s).
    think_us_max: int | None = None
    client_delay: bool = True  # client <-> coordinator links follow the profile too (else 0)
    sync_us: int = 1_000  # storage: time until a write is durable (and acked)
    read_us: int = 100  # storage: time to serve a read
    lazy_sync_us: int = 1_000_000  # ack-before-persist: the cache is flushed this often
    timeout_ms: int = 2_000  # the core's read and write round deadlines
    client_timeout_ms: int = 5_000  # no reply by then: the outcome is unknown
    tick_ms: int = 10  # the shell's default tick
    skew_ms_max: int = 500  # skew: each node's clock is off by up to +-this, at any moment
    gc_grace_ms: tuple[int, int] = (300, 3_000)  # gc: hint age drawn from this range (grace: + clock spread)
    #: Swarm testing: each seed draws which of ``faults`` are on (else all of them are).
    swarm: bool = False
    fault_gap_ms: tuple[int, int] = (100, 800)  # nemesis: pause between actions
    fault_len_ms: tuple[int, int] = (50, 1_500)  # nemesis: how long an action lasts

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"--nodes must be >= 1 (got {self.nodes})")
        n = min(self.n, self.nodes)
        if not 1 <= self.n <= 16:
            raise ValueError(f"--n must be within 1..16 (got {self.n})")
        for name, value in (("r", self.r), ("w", self.w)):
            if not 1 <= value <= n:
                raise ValueError(f"--{name} must be within 1..N={n} (got {value})")
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        if self.bug is not None and self.bug not in BUGS:
            raise ValueError(f"unknown bug {self.bug!r}; known: {', '.join(BUGS)}")
        if self.skew_ms_max < 0:
            raise ValueError(f"--skew-ms-max must be >= 0 (got {self.skew_ms_max})")
        if self.ops < 0 or self.clients < 1 or self.keys < 1:
            raise ValueError("--ops must be >= 0, --clients and --keys >= 1")

    @property
    def think_us(self) -> int:
        if self.think_us_max is not None:
            return self.think_us_max
        return 50_000 if any(f in RING_FAULTS for f in self.faults) else 5_000

    @property
    def effective_n(self) -> int:
        return min(self.n, self.nodes)

    @property
    def strict(self) -> bool:
        """R + W > N: every read quorum meets every write quorum."""
        return self.r + self.w > self.effective_n

    def with_(self, **kw) -> "SimConfig":
        return replace(self, **kw)


def parse_faults(text: str | None) -> tuple[str, ...]:
    """``"loss,crash"`` -> ("crash", "loss") (sorted, so the command line is canonical)."""
    if not text or text.strip().lower() in ("", "none"):
        return ()
    if text.strip().lower() == "all":
        return tuple(sorted(ALL_FAULTS))
    items = sorted({part.strip().lower() for part in text.split(",") if part.strip()})
    unknown = [f for f in items if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}, all, none")
    return tuple(items)

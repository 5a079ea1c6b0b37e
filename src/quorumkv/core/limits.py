"""Named limits. Every bound in quorumkv has a name, a unit and a reason."""

#: Largest frame accepted on any socket (client or internode). A value is at most
#: VALUE_BYTES_MAX, so 16 MiB leaves room for framing and metadata; anything larger
#: is a broken or hostile peer and the connection is closed.
FRAME_BYTES_MAX = 16 * 1024 * 1024

#: Keys are identifiers, not payload (Cassandra caps partition keys at 64 KiB).
KEY_BYTES_MAX = 64 * 1024

#: Values travel in one frame and sit in one SQLite row; beyond a few MiB use chunks.
VALUE_BYTES_MAX = 8 * 1024 * 1024

#: Quorum rounds a coordinator keeps open at once; past it new requests are refused
#: with an Overloaded error instead of growing memory without bound.
ROUNDS_INFLIGHT_MAX = 20_000

#: Requests one client connection may have outstanding before the node stops reading
#: from it (TCP back-pressure instead of an unbounded queue).
CLIENT_PIPELINE_MAX = 1_000

#: Bytes queued towards one peer before further sends fail fast (the peer is too slow
#: or gone; failing lets the quorum round decide instead of buffering forever).
PEER_QUEUE_BYTES_MAX = 64 * 1024 * 1024

#: Replica sets larger than this make no sense for a quorum store (Riak caps n_val
#: far lower in practice); it also bounds the fan-out of one request.
REPLICAS_MAX = 16

#: Virtual nodes per physical node: 256 keeps each node's share within a few per cent
#: of the mean for small clusters (Cassandra's old default num_tokens was 256).
VNODES_DEFAULT = 256

#: Latency samples a node keeps per WARS kind (W, A, R, S) for live PBS prediction
#: and dynamic quorums: a ring buffer, newest kept; 10,000 floats of each is ~0.3 MB
#: and resamples the tail well enough for a 0.999 target.
PBS_SAMPLES_MAX = 10_000

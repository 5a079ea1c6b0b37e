"""Optional add-ons built on quorumkv's core, not needed by a node or the client.

* ``redis_quorum`` — client-side quorum reads/writes over N plain Redis servers
  (``QuorumRedis``, ``AsyncQuorumRedis``); it stores records in the same layout as the
  node's Redis storage engine (``core/redis_layout.py``), so each reads the other's data.

contrib/ imports ``core/`` and ``quorumkv.errors`` only — never the node's shell
(tests/core/test_layers.py).
"""

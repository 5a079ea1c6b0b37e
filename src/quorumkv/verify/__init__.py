"""quorumkv verify: a Jepsen-style linearizability test against a real local cluster (runner.py) and its WGL checker (checker.py)."""

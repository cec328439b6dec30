"""MRPF plugin (module robustness sensitivity, adaptive structured pruning)."""

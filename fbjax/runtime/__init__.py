"""Floor 4: the training runtime (the one loop, optimisers, data parallelism, tracking,
sweeps)."""

"""tortiectl: the command-line interface (calicoctl's equivalent)."""

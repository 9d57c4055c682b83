"""A trained model on disk: the bundle format and the kept trial checkpoints."""

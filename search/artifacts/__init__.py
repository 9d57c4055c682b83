"""A trial's files: the model bundle format, the artifact store, what a kept trial uploads and reads back."""

"""Plain types at the bottom: the parsed space, TrialConfig, errors, registries, progress, redaction."""

# The public modules (``from search.core import *``); each declares its own names.
__all__ = ["config", "errors", "progress", "redact", "registry", "spec"]

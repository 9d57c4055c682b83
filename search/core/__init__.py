"""Plain types at the bottom: the parsed space, TrialConfig, errors, registries, progress, redaction."""

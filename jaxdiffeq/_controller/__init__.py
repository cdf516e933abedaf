"""The step-size controllers: one per file."""

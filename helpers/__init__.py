"""Edge MLOps loop helpers."""

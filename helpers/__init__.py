"""Edge MLOps loop helpers: the package the notebooks call."""

__version__ = "0.1.0"

"""bonuscli's version (the one place; pyproject.toml reads it from here). Imports nothing."""

__version__ = "0.1.0"

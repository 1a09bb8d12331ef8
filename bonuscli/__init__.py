"""bonuscli: a telecom loyalty-points program on plain files. Imports nothing."""

__version__ = "0.1.0"

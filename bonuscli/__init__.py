"""bonuscli: a telecom loyalty-points program on plain files.

The Python API (CLI.md §5, docs/python.md) is reached from here and imported only when first
used, so that `import bonuscli` (and the CLI's start-up) stays light:

    import bonuscli
    program = bonuscli.open(data_dir="data")
    program.earn("9161234567", "500.00", category="mobile", at="2025-03-02")
"""

from bonuscli.version import __version__  # noqa: F401

_API = ("open", "calc", "Program", "BonusError", "Refused", "BadInput", "FilesError")


def __getattr__(name):
    if name in _API:
        from bonuscli import api

        return getattr(api, name)
    raise AttributeError(f"module 'bonuscli' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))

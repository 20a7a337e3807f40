"""The error every layer raises for a parameter, path or file it cannot use (the CLI prints it as one line).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A parameter, path or file that the workspace cannot use; the message says which and why."""

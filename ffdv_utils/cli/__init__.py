"""``python -m ffdv_utils <command>``: every command-line parser.
"""

from .main import main

__all__ = ["main"]

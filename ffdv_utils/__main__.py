import sys

from .cli.main import main

if __name__ == "__main__":  # worker processes (spawn / forkserver) import this module again: do nothing then
    sys.exit(main())

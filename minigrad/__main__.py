"""`python -m minigrad ...`: the `minigrad` command, for an environment where its script is not on PATH."""

import sys

from minigrad.cli import main

if __name__ == "__main__":
    sys.exit(main())

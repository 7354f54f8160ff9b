"""Start the lestats server: ``python3 run.py --help`` lists the options."""

import sys

from lestats.cli import main

if __name__ == "__main__":
    sys.exit(main())

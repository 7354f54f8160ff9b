"""Start the lestats server: ``python3 run.py --help`` lists the options."""

import sys
from pathlib import Path

# Under `python3 -I` the script's folder is not on sys.path; the package is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lestats.cli import main  # noqa: E402  pylint: disable=wrong-import-position

if __name__ == "__main__":
    sys.exit(main())

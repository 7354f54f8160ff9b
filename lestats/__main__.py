"""``python3 -m lestats``: the same program as ``run.py``."""

import sys

from .cli import main

sys.exit(main())

"""``python3 -m lestats.lab``: see lestats.lab."""

import sys

from . import main

sys.exit(main())

"""``python -m companion <notebook> [--profile P] [--set k=v ...]``: execute one notebook."""

import sys

from companion.engine.runner import main

sys.exit(main())

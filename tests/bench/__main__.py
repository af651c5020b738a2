"""``python -m tests.bench``: run the benchmark and print its table."""

import sys

from .runner import main

sys.exit(main())

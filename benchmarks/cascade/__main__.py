"""``python -m benchmarks.cascade``: see :mod:`benchmarks.cascade.bench`."""
import sys

from benchmarks.cascade.bench import main

sys.exit(main())

"""``python -m affectlab ...``: the same as the ``affectlab`` command (useful where the
console script is not on PATH, e.g. a venv that is not activated)."""

import sys

from affectlab.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m attnlab``: the same command as the ``attnlab`` console script (see :mod:`attnlab.cli`).

It works where the console script is not on ``PATH`` (a user install, a virtual environment not activated).
"""

from __future__ import annotations

import sys

from attnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())

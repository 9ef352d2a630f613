"""``python -m explain_batch``: the same as the ``explain-batch`` command."""

import sys

from explain_batch.cli import main

if __name__ == "__main__":
    sys.exit(main())

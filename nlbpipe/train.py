"""``python -m nlbpipe.train CONFIG``: one NDT training run (the code is ``nlbpipe.ndt.train``).

Kept so that the command users, docs and the GPU machine call stays the same.
"""

import sys

from .ndt.train import main

if __name__ == "__main__":
    sys.exit(main())

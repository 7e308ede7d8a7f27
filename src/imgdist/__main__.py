"""`python -m imgdist` is the `imgdist` command."""

import sys

from imgdist.cli import main

sys.exit(main())

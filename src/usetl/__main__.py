"""`python -m usetl` is the `usetl` command."""

import sys

from usetl.cli import main

sys.exit(main())

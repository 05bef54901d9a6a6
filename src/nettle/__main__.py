"""`python -m nettle ...` is the `nettle` command."""

import sys

from nettle.cli import main

sys.exit(main())

"""`python -m tortie.libnetwork`: the same as the `tortie-libnetwork` command."""

import sys

from tortie.libnetwork.server import main

sys.exit(main())

"""`python -m gateway` is the `keygate` command."""

import sys

from gateway.cli import main

sys.exit(main())

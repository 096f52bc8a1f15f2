"""`python -m fashionnet` is the `fashionnet` command."""

import sys

from .cli import main

sys.exit(main())

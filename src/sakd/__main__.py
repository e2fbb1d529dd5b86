"""``python -m sakd`` (used by torchrun) runs the command line."""

import sys

from sakd.cli import main

sys.exit(main())

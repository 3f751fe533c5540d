"""``python -m cli``: the ``distillsync`` command from a source tree."""

import sys

from cli.main import main

sys.exit(main())

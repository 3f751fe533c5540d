"""``python -m tui --socket PATH`` (or ``--relay URL``): the dashboards without the CLI."""

from tui.cli import main

raise SystemExit(main())

"""``python -m exporter``: the same as the ``checkpoint-exporter`` command."""

from exporter.cli import main

raise SystemExit(main())

"""python -m exporter.settings [README.md]: regenerate the README's configuration table."""

import sys

from exporter.settings.render import main

raise SystemExit(main(sys.argv[1:]))

"""python -m exporter.contract: regenerate the health schema and the README's metrics table."""

from exporter.contract.generated import main

raise SystemExit(main())

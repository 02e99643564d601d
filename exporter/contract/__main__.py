"""python -m exporter.contract: regenerate the health document's JSON Schema."""

from exporter.contract.generated import main

raise SystemExit(main())

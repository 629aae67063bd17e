"""``python -m airgap``: the same entry point as the ``airgap`` console script."""

from airgap.cli import main

raise SystemExit(main())

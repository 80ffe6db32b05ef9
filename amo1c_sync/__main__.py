"""``python -m amo1c_sync``: the same as the ``amo1c-sync`` command."""

from amo1c_sync.cli import main

raise SystemExit(main())

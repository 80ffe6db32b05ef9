from amo1c_sync.cli import main

raise SystemExit(main())

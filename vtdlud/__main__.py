from vtdlud.cli import main

raise SystemExit(main())

from fmos_mcp.cli import main

raise SystemExit(main())

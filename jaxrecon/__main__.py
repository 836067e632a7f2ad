"""`python -m jaxrecon ...` runs the `jaxrecon` command (see `jaxrecon.cli`)."""

from jaxrecon.cli import main

raise SystemExit(main())

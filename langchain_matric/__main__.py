"""`python -m langchain_matric` runs the `matric` command."""

from langchain_matric.cli import main

raise SystemExit(main())

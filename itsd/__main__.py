"""Run the CLI as ``python -m itsd``."""

from itsd.cli import main

main()

"""`python -m proctor` runs the CLI."""

from proctor.cli import main

main()

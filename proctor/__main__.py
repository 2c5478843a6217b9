"""`python -m proctor` runs the CLI."""

from proctor.cli import main

if __name__ == "__main__":
    main()

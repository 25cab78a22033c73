"""`python -m ganforge` runs the command line."""

from ganforge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m alignkit`` is the same as the ``alignkit`` console script."""

from alignkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Allow ``python -m hubproxy``."""

from hubproxy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

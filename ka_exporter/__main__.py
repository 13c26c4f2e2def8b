"""`python -m ka_exporter` runs the `ka-exporter` command."""

from ka_exporter.cli import main

if __name__ == "__main__":
    main()

"""`python -m geogan <command>`."""

from geogan.cli import main

main()

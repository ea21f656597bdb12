"""`python -m iddetective` runs the command line."""

from .cli import main

main()

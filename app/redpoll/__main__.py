"""`python -m redpoll` runs the CLI."""

from redpoll.cli.main import main

main()

"""`python -m dpaudit ...` runs the command line (what `torchrun -m dpaudit generate ...` needs)."""

from dpaudit.cli import main

main()

"""``python -m catdog`` (and ``torchrun -m catdog``) run the command line."""

from catdog.cli import main

main()

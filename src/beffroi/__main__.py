"""Allow `python -m beffroi`."""

from beffroi.core.cli import main

main()

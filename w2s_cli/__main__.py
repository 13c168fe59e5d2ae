"""`python -m w2s_cli ...` is `w2s ...` (the entry torchrun needs: torchrun -m w2s_cli extract ...)."""

from w2s_cli.cli.app import main

main()

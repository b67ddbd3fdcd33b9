"""``python -m filedrop.cli``: the same as the ``filedrop`` command."""

from filedrop.cli import main

main()

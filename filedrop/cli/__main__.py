"""``python -m filedrop.cli``, the same as ``python -m filedrop`` and the ``filedrop`` script."""

from filedrop.cli import main

main()

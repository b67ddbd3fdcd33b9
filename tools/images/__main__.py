"""``python -m tools.images build|clean`` (see tools/images/build.py)."""

from tools.images.build import main

raise SystemExit(main())

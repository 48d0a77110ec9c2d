"""``python -m nelu``: see :mod:`nelu.cli`."""

from .cli import main

raise SystemExit(main())

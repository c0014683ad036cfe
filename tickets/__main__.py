"""``python -m tickets``: the offline demo (see :mod:`tickets.demo`)."""

from tickets.demo import main

raise SystemExit(main())

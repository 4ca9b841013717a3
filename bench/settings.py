"""Production settings plus one timing middleware, used only by the benchmarks.

Everything comes from `config.settings` (run with DEBUG=0); the only addition is
`bench.timing.ServerTimingMiddleware` at the top of the stack, which adds a `Server-Timing`
header with the time spent inside Django (all middleware, view, database) for the request.
"""

from config.settings import *  # noqa: F403
from config.settings import MIDDLEWARE

MIDDLEWARE = ["bench.timing.ServerTimingMiddleware", *MIDDLEWARE]

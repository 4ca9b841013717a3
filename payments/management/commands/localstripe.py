"""`manage.py localstripe --port N [--state FILE]`: localstripe, the Stripe stand-in from PyPI
(a development dependency), as `./dev run` runs it for the demo. Two changes to it:

- its state goes to `--state` (`./dev run`: the data folder), or stays in memory without it.
  localstripe itself pickles every object to one fixed file in /tmp that every instance on the
  machine shares;
- confirming a PaymentIntent accepts `off_session`, as Stripe does (localstripe refuses any
  parameter there, and asks for no authentication off-session except for its 3-D Secure cards).

Real Stripe never runs through this command: with STRIPE_SECRET_KEY set, `./dev run` uses it."""

import os
import pickle
import socket
import sys
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand

try:
    from localstripe import resources
except ImportError:  # a runtime-only install: the command says how to get it
    resources = None


def _persist_to(path: Path | None) -> None:
    if path is None:
        resources.Store.dump_to_disk = lambda self: None
        resources.Store.try_load_from_disk = lambda self: None
        return

    def dump(self):
        # written whole then renamed: a stop mid-write leaves the previous state readable
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False) as out:
            pickle.dump(dict(self), out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(out.name, path)

    def load(self):
        try:
            state = pickle.loads(path.read_bytes())  # noqa: S301 - our own file
        except (FileNotFoundError, EOFError, pickle.UnpicklingError):
            return
        self.clear()
        dict.update(self, state)

    resources.Store.dump_to_disk = dump
    resources.Store.try_load_from_disk = load


def _accept_off_session() -> None:
    confirm = resources.PaymentIntent._api_confirm

    def confirm_with_off_session(id, off_session=None, **kwargs):
        return confirm(id, **kwargs)

    for index, (method, url, _func) in enumerate(resources.extra_apis):
        if url == "/v1/payment_intents/{id}/confirm":
            resources.extra_apis[index] = (method, url, confirm_with_off_session)


class Command(BaseCommand):
    help = "Run localstripe (development and demo only) with its state in a file of your own."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8420)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--state", help="file to keep its state in (default: memory only)")

    def handle(self, *args, port, host, state, **options):
        if resources is None:
            self.stderr.write("localstripe is not installed: pip install -e '.[dev]'")
            raise SystemExit(2)
        path = Path(state).resolve() if state else None
        _persist_to(path)
        _accept_off_session()
        resources.store.try_load_from_disk()
        # localstripe builds its routes from `extra_apis` when its server module is imported:
        # imported here, after the patch above, and only by this command
        from aiohttp import web
        from localstripe import server

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        web.run_app(server.app, sock=sock, access_log=None, print=None)


if __name__ == "__main__":
    # `./dev run` starts it as `python -m payments.management.commands.localstripe`: the server
    # needs nothing of Django, whose set-up (every app, the admin) costs seconds of CPU on a busy
    # machine while the developer waits for the banner.
    Command().run_from_argv(["manage.py", "localstripe", *sys.argv[1:]])

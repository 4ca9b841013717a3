"""The `/v1/` edge: what every API request gets before a view sees it."""

import io

from django.conf import settings
from django.urls import Resolver404, get_resolver

from core.api.errors import (
    length_required_response,
    not_found_response,
    request_too_large_response,
)

API_PREFIX = "/v1/"
DRAIN_CHUNK_BYTES = 1024 * 1024
DRAIN_CHUNKS = 64


class ApiEdgeMiddleware:
    """What every `/v1/` request gets before a view sees it.

    - Both slash forms of a path: Polar's clients write some paths with a trailing slash
      (`customers/`) and some without (`events/ingest`), and other clients add or drop it.
      The other form is served in place (no redirect: a POST cannot follow one).
    - A JSON 404 for paths that match nothing, DEBUG or not (Django's debug page is HTML).
    - Chunked bodies (no Content-Length): where the server decodes them (gunicorn: the WSGI
      `wsgi.input_terminated` flag), read up to the body limit, so an oversized one gets the
      same 413 as a declared one and a small one parses normally; where it does not
      (runserver), a 411 that says to send a Content-Length — rather than an empty body.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        if not path.startswith(API_PREFIX):
            return self.get_response(request)
        if not self._resolves(request, path):
            other = path[:-1] if path.endswith("/") else f"{path}/"
            if not self._resolves(request, other):
                return not_found_response()
            request.path_info = other
        if self._chunked(request):
            if not request.environ.get("wsgi.input_terminated", False):
                # e.g. runserver: it hands over no body without a Content-Length
                return length_required_response()
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            stream = request.environ["wsgi.input"]
            body = stream.read(limit + 1)
            if len(body) > limit:
                # read the rest (within reason) so the client sees the 413, not a reset
                for _ in range(DRAIN_CHUNKS):
                    if not stream.read(DRAIN_CHUNK_BYTES):
                        break
                return request_too_large_response()
            request.META["CONTENT_LENGTH"] = str(len(body))
            request._stream = io.BytesIO(body)
        return self.get_response(request)

    @staticmethod
    def _resolves(request, path: str) -> bool:
        try:
            get_resolver(getattr(request, "urlconf", None)).resolve(path)
        except Resolver404:
            return False
        return True

    @staticmethod
    def _chunked(request) -> bool:
        return not request.META.get("CONTENT_LENGTH") and (
            "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        )

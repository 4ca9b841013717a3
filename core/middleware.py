from django.http import JsonResponse


class RejectNulCharactersMiddleware:
    """PostgreSQL text can't hold NUL (0x00); refuse it at the edge instead of failing in SQL."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/v1/"):
            if "\x00" in request.path:
                return JsonResponse(
                    {"error": "ResourceNotFound", "detail": "Not found."}, status=404
                )
            bad = [
                key
                for key, values in request.GET.lists()
                if "\x00" in key or any("\x00" in v for v in values)
            ]
            if bad:
                detail = [
                    {
                        "loc": ["query", key.replace("\x00", "")],
                        "msg": "NUL characters are not allowed",
                        "type": "string_nul",
                    }
                    for key in bad
                ]
                return JsonResponse({"detail": detail}, status=422)
        return self.get_response(request)

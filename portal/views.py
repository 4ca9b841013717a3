from django.http import HttpResponse


def home(request):
    return HttpResponse(
        "<!doctype html><title>Meterline</title><h1>Meterline</h1>"
        '<p><a href="/admin/">Admin</a> · <a href="/v1/openapi.json">API schema</a></p>',
        content_type="text/html",
    )

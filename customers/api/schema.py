from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "customers.api.auth.BearerTokenAuthentication"
    name = "access_token"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "Organization access token"}

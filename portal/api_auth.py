"""How the API authenticates: token, session, and HTTP Basic over HTTPS only; a 401 says which.

Its own module: settings.REST_FRAMEWORK names these classes, and DRF imports them while
rest_framework.views loads, so this module must not import views at import time.
"""

from rest_framework import authentication
from rest_framework.exceptions import NotAuthenticated

# what a 401 and the API root tell a client (curl -u over plain HTTP is refused on purpose)
AUTH_SCHEMES = [
    "Token: 'Authorization: Token <key>' (manage.py drf_create_token <user>)",
    "Session: the portal's login cookie, with the CSRF token on writes",
    "Basic: 'Authorization: Basic' for staff users, over HTTPS only",
]


class TlsBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic for scripts (`curl -u`), accepted only over HTTPS: never a password in clear."""

    def authenticate(self, request):
        if not request.is_secure():
            return None
        return super().authenticate(request)


def explain_401(exc, context):
    """DRF's answer, with the schemes that work when no credentials were accepted."""
    from rest_framework.views import exception_handler

    response = exception_handler(exc, context)
    if response is not None and response.status_code == 401:
        response.data = {"detail": str(exc.detail), "accepted": AUTH_SCHEMES}
        if (
            isinstance(exc, NotAuthenticated)
            and context["request"].META.get("HTTP_AUTHORIZATION", "").lower().startswith("basic")
            and not context["request"].is_secure()
        ):
            response.data["detail"] = "HTTP Basic is accepted only over HTTPS"
    return response

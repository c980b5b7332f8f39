"""Who may do what in the portal: staff see every page; each POST action needs its permission."""

from functools import wraps

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.views.decorators.http import require_POST


def staff_required(view):
    """Staff only; anyone else is sent to the portal's login page."""
    return staff_member_required(view, login_url="portal:login")


def post_with_permission(*perms: str):
    """A POST-only staff action that needs every one of `perms` (403 otherwise).

    CSRF is checked by CsrfViewMiddleware before the view runs.
    """

    def decorate(view):
        @wraps(view)
        def checked(request, *args, **kwargs):
            if not request.user.has_perms(perms):
                raise PermissionDenied(f"needs the permission {', '.join(perms)}")
            return view(request, *args, **kwargs)

        return staff_required(require_POST(checked))

    return decorate

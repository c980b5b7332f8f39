"""HTTP API (/api/): stations (list, create, update, delete, rotate password, kick), the message
log, send a command.

Token or session auth (HTTP Basic too, over HTTPS only) and staff only (settings.REST_FRAMEWORK);
every write also needs its Django permission. It calls the same code as the portal and admin
(portal.control, portal.msgsearch, stations.services).
"""

import orjson
from django.db import transaction
from django.http import Http404
from rest_framework import generics, permissions, status, views
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.utils.urls import replace_query_param

from portal import control, msgsearch
from portal.api_auth import AUTH_SCHEMES
from portal.api_serializers import (
    CommandAnswerSerializer,
    CommandSentSerializer,
    CommandSerializer,
    KickSerializer,
    MessageSerializer,
    NewStationSerializer,
    PasswordSerializer,
    StationSerializer,
)
from portal.forms import MessageFilterForm
from stations import audit, identity, services
from stations.models import MessageLog, Station

API_VERSION = "1"

MAX_ROWS = 200


def needs(perm: str):
    """A DRF permission: staff with the given Django permission."""

    class Needs(permissions.IsAdminUser):
        def has_permission(self, request, view):
            return super().has_permission(request, view) and request.user.has_perm(perm)

    Needs.__name__ = f"Needs_{perm.replace('.', '_')}"
    return Needs


class WritePermissions(permissions.DjangoModelPermissions):
    """Staff, and for writes the model's add/change/delete permission (reading needs none)."""

    perms_map = {**permissions.DjangoModelPermissions.perms_map, "GET": [], "HEAD": []}

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_staff) and super().has_permission(
            request, view
        )


class ApiRoot(views.APIView):
    """Where everything is, which version this is, and how to authenticate."""

    permission_classes = [permissions.AllowAny]

    def get(self, request):
        def link(name):
            return reverse(f"api:{name}", request=request)

        return Response(
            {
                "version": API_VERSION,
                "stations": link("stations"),
                "messages": link("messages"),
                "schema": link("schema"),
                "authentication": AUTH_SCHEMES,
            }
        )


def _station(cid: str) -> Station:
    station = Station.objects.filter(cid_key=identity.key(cid)).first()
    if station is None:
        raise Http404(f"no station {cid!r}")
    return station


class StationList(generics.ListCreateAPIView):
    """Stations by cid; `?connected=true|false`, `?search=<part of a cid>`, keyset `?after=<cid>`.

    POST creates one (needs stations.add_station); the answer carries its password, once."""

    serializer_class = StationSerializer
    permission_classes = [WritePermissions]
    queryset = Station.objects.none()  # for the permission's model; get_queryset filters

    def get_serializer_class(self):
        return NewStationSerializer if self.request.method == "POST" else StationSerializer

    def create(self, request, *args, **kwargs):
        body = NewStationSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        cid, password = fields.pop("cid"), fields.pop("password", "")
        try:
            station, password = services.create_station(cid, password, **fields)
        except (services.StationRefused, services.PasswordRefused) as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        audit.record(request.user, "api", "station created", station.cid, str(fields))
        data = {**StationSerializer(station, context={"request": request}).data}
        data["password"] = password  # shown this once; stored only as a hash
        return Response(data, status=status.HTTP_201_CREATED)

    def get_queryset(self):
        qs = Station.objects.order_by("cid_key")
        p = self.request.query_params
        if p.get("connected") == "true":
            qs = qs.exclude(connection_id="")
        elif p.get("connected") == "false":
            qs = qs.filter(connection_id="")
        if p.get("search"):
            qs = qs.filter(cid_key__contains=identity.key(p["search"]))
        if p.get("after"):
            qs = qs.filter(cid_key__gt=identity.key(p["after"]))
        return qs

    def list(self, request, *args, **kwargs):
        rows = list(self.get_queryset()[: MAX_ROWS + 1])
        more = len(rows) > MAX_ROWS
        rows = rows[:MAX_ROWS]
        next_url = None
        if more:
            next_url = replace_query_param(request.build_absolute_uri(), "after", rows[-1].cid)
        data = self.get_serializer(rows, many=True).data
        return Response({"results": data, "next": next_url})


class StationDetail(generics.RetrieveUpdateDestroyAPIView):
    """One station. PATCH enabled / security_profile / validation_policy (stations.change_station):
    disabling or a new profile closes its live socket within a second, a policy change applies to
    it live. DELETE (stations.delete_station) removes it and its user and closes its socket."""

    serializer_class = StationSerializer
    permission_classes = [WritePermissions]
    queryset = Station.objects.none()

    def get_object(self):
        return _station(self.kwargs["cid"])

    def perform_update(self, serializer):
        serializer.save()
        changed = {k: v for k, v in serializer.validated_data.items()}
        audit.record(
            self.request.user, "api", "station updated", serializer.instance.cid, str(changed)
        )

    def perform_destroy(self, instance):
        services.delete_station(instance)
        audit.record(self.request.user, "api", "station deleted", instance.cid)


class StationPassword(generics.GenericAPIView):
    """Set a new password (generated if none is given), shown once in the answer; the live socket
    closes within a second and the station must use the new one (stations.change_station)."""

    serializer_class = PasswordSerializer
    permission_classes = [needs("stations.change_station")]

    def post(self, request, cid):
        station = _station(cid)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        password = body.validated_data.get("password") or services.suggest_password()
        try:
            with transaction.atomic():
                services.set_password(station, password)
        except services.PasswordRefused as exc:
            raise ValidationError({"password": str(exc)}) from exc
        audit.record(request.user, "api", "password rotated", station.cid)  # never the secret
        return Response({"cid": station.cid, "password": password})


class StationKick(generics.GenericAPIView):
    """Close the station's socket in whichever gateway process holds it."""

    serializer_class = KickSerializer
    permission_classes = [needs("stations.kick_station")]

    def post(self, request, cid):
        station = _station(cid)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason") or f"kicked by {request.user} (API)"
        try:
            control.kick(station, reason)
        except (control.Refused, TimeoutError) as exc:
            detail = getattr(exc, "message", "the gateway did not confirm in time")
            audit.record(request.user, "api", "kick", station.cid, reason, f"failed: {detail}")
            return Response({"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        audit.record(request.user, "api", "kick", station.cid, reason)
        return Response({"cid": station.cid, "reason": reason}, status=status.HTTP_202_ACCEPTED)


class StationCommand(generics.GenericAPIView):
    """Validate a CALL against the station's OCPP version and publish it on its downstream topic.

    The station's answer (or the gateway's error) arrives in the message log; poll `answer`.
    """

    serializer_class = CommandSerializer
    permission_classes = [needs("stations.send_command")]

    def post(self, request, cid):
        station = _station(cid)
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        action, payload = body.validated_data["action"], body.validated_data["payload"]
        detail = f"{action} {orjson.dumps(payload).decode()}"
        try:
            unique_id, topic = control.send(station, action, payload)
        except control.Refused as exc:
            audit.record(
                request.user, "api", "command", station.cid, detail, f"not sent: {exc.message}"
            )
            raise ValidationError(
                {"detail": exc.message, "path": exc.path, "rule": exc.rule}
            ) from exc
        audit.record(request.user, "api", "command", station.cid, detail, f"sent as {unique_id}")
        answer = reverse("api:command-answer", args=[station.cid, unique_id], request=request)
        sent = CommandSentSerializer({"unique_id": unique_id, "topic": topic, "answer": answer})
        return Response(sent.data, status=status.HTTP_202_ACCEPTED)


class CommandAnswer(generics.GenericAPIView):
    """What became of a command: state waiting|sent|answered|error and the answer envelope."""

    serializer_class = CommandAnswerSerializer

    def get(self, request, cid, unique_id):
        return Response(self.get_serializer(control.answer(_station(cid), unique_id)).data)


class MessageList(generics.ListAPIView):
    """The message log, newest first, keyset-paginated: follow `next` (an `after` cursor).

    Filters: station, direction (in|out|gw), type (2-6), action, uid, since, until (ISO 8601, UTC
    when no offset is given), limit (at most 200).
    """

    serializer_class = MessageSerializer
    queryset = MessageLog.objects.none()  # for the schema; list() builds the real query

    def list(self, request, *args, **kwargs):
        form = MessageFilterForm(request.query_params)
        if not form.is_valid():
            raise ValidationError(form.errors)
        try:
            limit = min(MAX_ROWS, max(1, int(request.query_params.get("limit", 50))))
        except ValueError as exc:
            raise ValidationError({"limit": "an integer from 1 to 200"}) from exc
        page = msgsearch.page(form.filters(), request.query_params.get("after", ""), limit)
        next_url = None
        if page.next_cursor:
            next_url = replace_query_param(request.build_absolute_uri(), "after", page.next_cursor)
        data = self.get_serializer(page.rows, many=True).data
        return Response({"results": data, "next": next_url})

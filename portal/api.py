"""HTTP API (/api/): stations (list, detail, kick), the message log, send a command.

Token or session auth and staff only (settings.REST_FRAMEWORK); kick and commands also need
their permission. It calls the same code as the portal (portal.control, portal.msgsearch).
"""

from django.http import Http404
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.utils.urls import replace_query_param

from portal import control, msgsearch
from portal.forms import MessageFilterForm
from stations import identity
from stations.models import MessageLog, Station

MAX_ROWS = 200


def needs(perm: str):
    """A DRF permission: staff with the given Django permission."""

    class Needs(permissions.IsAdminUser):
        def has_permission(self, request, view):
            return super().has_permission(request, view) and request.user.has_perm(perm)

    Needs.__name__ = f"Needs_{perm.replace('.', '_')}"
    return Needs


class StationSerializer(serializers.ModelSerializer):
    connected = serializers.BooleanField(source="is_connected", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Station
        fields = [
            "cid",
            "url",
            "enabled",
            "security_profile",
            "connected",
            *Station.GATEWAY_FIELDS,
        ]

    def get_url(self, obj) -> str:
        return reverse("api:station", args=[obj.cid], request=self.context.get("request"))


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageLog
        fields = [
            "id",
            "created",
            "cid",
            "direction",
            "message_type",
            "unique_id",
            "action",
            "size",
            "payload",
            "outcome",
            "reason",
            "topic",
        ]


class KickSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=120, required=False, allow_blank=True)


class CommandSerializer(serializers.Serializer):
    action = serializers.CharField(max_length=64, help_text="e.g. Reset")
    payload = serializers.DictField(help_text='the OCPP payload, e.g. {"type": "Soft"}')


class CommandSentSerializer(serializers.Serializer):
    unique_id = serializers.CharField()
    topic = serializers.CharField()
    answer = serializers.URLField(help_text="poll this for the station's answer")


class CommandAnswerSerializer(serializers.Serializer):
    unique_id = serializers.CharField()
    state = serializers.ChoiceField(["waiting", "sent", "answered", "error"])
    answer = serializers.JSONField(help_text="the station's answer frame or the gateway's error")
    rows = serializers.ListField(child=serializers.DictField(), help_text="log rows seen so far")


def _station(cid: str) -> Station:
    station = Station.objects.filter(cid_key=identity.key(cid)).first()
    if station is None:
        raise Http404(f"no station {cid!r}")
    return station


class StationList(generics.ListAPIView):
    """Stations by cid; `?connected=true|false`, `?search=<part of a cid>`, keyset `?after=<cid>`."""

    serializer_class = StationSerializer

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


class StationDetail(generics.RetrieveAPIView):
    serializer_class = StationSerializer

    def get_object(self):
        return _station(self.kwargs["cid"])


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
            return Response({"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
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
        try:
            unique_id, topic = control.send(
                station, body.validated_data["action"], body.validated_data["payload"]
            )
        except control.Refused as exc:
            raise ValidationError(
                {"detail": exc.message, "path": exc.path, "rule": exc.rule}
            ) from exc
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

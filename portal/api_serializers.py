"""The API's request and response shapes (portal/api.py's views use them)."""

from rest_framework import serializers
from rest_framework.reverse import reverse

from stations import services
from stations.models import MessageLog, Station


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
            "validation_policy",
            "connected",
            *Station.GATEWAY_FIELDS,
        ]
        read_only_fields = ["cid", *Station.GATEWAY_FIELDS]

    def get_url(self, obj) -> str:
        return reverse("api:station", args=[obj.cid], request=self.context.get("request"))


class NewStationSerializer(serializers.Serializer):
    cid = serializers.CharField(max_length=48)
    password = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text=f"{services.MIN_PASSWORD}-{services.MAX_PASSWORD} characters; generated if absent",
    )
    enabled = serializers.BooleanField(default=True)
    security_profile = serializers.ChoiceField(Station.PROFILES, default=1)
    validation_policy = serializers.ChoiceField(Station.POLICIES, default="")


class PasswordSerializer(serializers.Serializer):
    password = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text="generated if absent"
    )


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

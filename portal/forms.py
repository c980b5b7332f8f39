"""Portal forms: message-log filters, topic rules with their preview, validation exemptions."""

import datetime

import orjson
from django import forms

from portal import msgsearch
from stations import identity, topics
from stations.models import MessageLog, Station, TopicRule, ValidationExemption

TYPES = [("", "any type"), ("2", "2 CALL"), ("3", "3 CALLRESULT"), ("4", "4 CALLERROR")]
TYPES += [("5", "5 CALLRESULTERROR"), ("6", "6 SEND")]


class _UtcDateTimeField(forms.DateTimeField):
    """A time typed in UTC (the portal shows every time in UTC), ISO 8601 or datetime-local."""

    input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"})

    def to_python(self, value):
        value = super().to_python(value)  # naive input is read in TIME_ZONE, which is UTC
        return value.astimezone(datetime.UTC) if value is not None else None


class MessageFilterForm(forms.Form):
    station = forms.CharField(required=False, max_length=48, label="Station")
    direction = forms.ChoiceField(
        required=False, choices=[("", "any direction"), *MessageLog.DIRECTIONS]
    )
    type = forms.TypedChoiceField(
        required=False, choices=TYPES, coerce=int, empty_value=None, label="Type"
    )
    action = forms.CharField(required=False, max_length=64)
    uid = forms.CharField(required=False, max_length=36, label="UniqueId")
    since = _UtcDateTimeField(required=False, label="From (UTC)")
    until = _UtcDateTimeField(required=False, label="Until (UTC)")

    def filters(self) -> msgsearch.Filters:
        """The cleaned filters; call after is_valid()."""
        d = self.cleaned_data
        return msgsearch.Filters(
            station=d.get("station", "").strip(),
            direction=d.get("direction") or "",
            message_type=d.get("type"),
            action=d.get("action", "").strip(),
            unique_id=d.get("uid", "").strip(),
            since=d.get("since"),
            until=d.get("until"),
        )


class StationByCidField(forms.CharField):
    """A station typed by its cid (any case); blank means every station."""

    def clean(self, value):
        value = super().clean(value).strip()
        if not value:
            return None
        station = Station.objects.filter(cid_key=identity.key(value)).first()
        if station is None:
            raise forms.ValidationError(f"no station {value!r}")
        return station


class TopicRuleForm(forms.ModelForm):
    station = StationByCidField(
        required=False, max_length=48, help_text="blank = every station", label="Station (cid)"
    )

    class Meta:
        model = TopicRule
        fields = ["direction", "action", "station", "template"]
        widgets = {
            "template": forms.TextInput(
                attrs={"placeholder": "ocpp/cp/${cid}/Notify/${action}", "size": 48}
            ),
            "action": forms.TextInput(attrs={"placeholder": "BootNotification", "list": "actions"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.station_id:
            self.initial["station"] = self.instance.station.cid


class PreviewForm(forms.Form):
    """A rule as typed, rendered for a sample station and action before it is saved."""

    direction = forms.ChoiceField(choices=TopicRule.DIRECTIONS)
    template = forms.CharField(max_length=200)
    cid = forms.CharField(max_length=48, initial="CP001")
    action = forms.CharField(max_length=64, required=False, initial="BootNotification")

    def clean_cid(self):
        cid = self.cleaned_data["cid"]
        problem = identity.validate(cid)
        if problem:
            raise forms.ValidationError(problem)
        return cid

    def render(self) -> str:
        """The topic the template gives for the sample, or raises ValidationError."""
        d = self.cleaned_data
        downstream = d["direction"] == TopicRule.DOWNSTREAM
        problem = topics.validate(d["template"], downstream=downstream)
        if problem:
            raise forms.ValidationError(problem)
        values = dict(cid=d["cid"], version="1.6")
        if not downstream:
            values.update(action=d["action"] or "Unknown", id="42", type="2")
        return topics.render(d["template"], **values)


class ExemptionForm(forms.ModelForm):
    class Meta:
        model = ValidationExemption
        fields = ["action", "direction", "note"]
        widgets = {"action": forms.TextInput(attrs={"list": "actions"})}


class CommandForm(forms.Form):
    """A command typed in the portal: an action and its JSON payload."""

    action = forms.CharField(max_length=64)
    payload = forms.CharField(widget=forms.Textarea, initial="{}")
    confirm = forms.BooleanField(required=False)  # the operator confirmed a disruptive command

    def clean_payload(self):
        try:
            payload = orjson.loads(self.cleaned_data["payload"] or "{}")
        except orjson.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise forms.ValidationError("the payload must be a JSON object")
        return payload

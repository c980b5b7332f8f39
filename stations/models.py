"""Stations and their credentials, topic rules, validation exemptions, and the message log."""

import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from stations import identity, topics


class StationQuerySet(models.QuerySet):
    def connected(self):
        return self.exclude(connection_id="")

    def for_portal(self):
        """Stations as the portal's list shows them (no joins needed)."""
        return self.order_by("cid_key")


class Station(models.Model):
    """A charge point. Its identity is case-insensitive: `cid_key` is the lowercased cid."""

    PROFILES = [(1, "1: Basic auth"), (2, "2: TLS + Basic auth"), (3, "3: TLS client certificate")]
    # what the gateway writes about the station (presence and traffic): read-only everywhere
    GATEWAY_FIELDS = (
        "ocpp_version", "node", "connected_at", "disconnected_at", "last_frame_at", "frames_in",
        "frames_out", "frames_lenient", "last_refused_at", "last_refused_reason",
        "vendor", "model", "serial_number", "firmware_version", "last_boot_at",
        "last_heartbeat_at", "connectors",
    )  # fmt: skip
    # how a failing payload is treated (stations/quirks.py; docs/contract.md §2)
    POLICIES = [
        ("", "gateway default (OCPPGW_VALIDATION_FAILURE)"),
        ("strict", "strict: refuse every schema violation"),
        ("lenient", "lenient: accept the documented firmware quirks, marked"),
        ("log", "log: forward every payload, violations marked"),
    ]

    cid = models.CharField("charge point id", max_length=48, help_text="as the station sends it")
    cid_key = models.CharField(max_length=48, unique=True, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="station",
        help_text="the Django user whose password the station presents (username = cid)",
    )
    enabled = models.BooleanField(default=True)
    security_profile = models.PositiveSmallIntegerField(choices=PROFILES, default=1)
    validation_policy = models.CharField(
        max_length=8,
        choices=POLICIES,
        blank=True,
        default="",
        help_text="applies from the station's next connection",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # rotation through OCPP: the previous hash stays valid until previous_password_until
    previous_password = models.CharField(max_length=256, blank=True, editable=False)
    previous_password_until = models.DateTimeField(null=True, blank=True, editable=False)
    # bumped on every credential change, so every process drops remembered verifications
    credentials_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # bumped when validation_policy changes: live connections take it without a reconnect
    policy_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    # presence and traffic, written by the gateway's batched writer
    ocpp_version = models.CharField(max_length=8, blank=True)
    connection_id = models.CharField(max_length=40, blank=True, db_index=True)
    node = models.CharField(max_length=120, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_frame_at = models.DateTimeField(null=True, blank=True)
    frames_in = models.BigIntegerField(default=0)
    frames_out = models.BigIntegerField(default=0)
    frames_lenient = models.BigIntegerField(
        default=0, help_text="frames accepted only because the policy is lenient"
    )
    last_refused_at = models.DateTimeField(null=True, blank=True)
    last_refused_reason = models.CharField(max_length=200, blank=True)
    # what the station says about itself (stations/facts.py), written by the same writer
    vendor = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=50, blank=True)
    serial_number = models.CharField(max_length=50, blank=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    last_boot_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # connector (1.6 "2") or EVSE/connector (2.0.1 "1/2") -> {"status", "error_code", "at"}
    connectors = models.JSONField(default=dict, blank=True)

    objects = StationQuerySet.as_manager()

    class Meta:
        ordering = ["cid_key"]
        # operator actions of the portal and API, granted separately from editing stations
        permissions = [
            ("kick_station", "Can close a station's live connection"),
            ("send_command", "Can send OCPP commands to a station"),
        ]

    def __str__(self):
        return self.cid

    def save(self, *args, **kwargs):
        self.cid_key = identity.key(self.cid)
        super().save(*args, **kwargs)

    def clean(self):
        problem = identity.validate(self.cid)
        if problem:
            raise ValidationError({"cid": problem})

    @property
    def is_connected(self) -> bool:
        return bool(self.connection_id)


class DeletedStation(models.Model):
    """A deleted station, kept a day so every gateway process forgets its remembered password
    and closes its socket (the poll of stations/config_rows.py cannot see a row that is gone)."""

    cid_key = models.CharField(max_length=48)
    deleted_at = models.DateTimeField(db_index=True)

    KEEP = datetime.timedelta(days=1)

    def __str__(self):
        return f"{self.cid_key} (deleted {self.deleted_at:%Y-%m-%dT%H:%M:%SZ})"


class TopicRule(models.Model):
    """A topic-template override; the most specific rule wins (docs/contract.md §2)."""

    UPSTREAM, REPLY, ERROR, DOWNSTREAM = "upstream", "reply", "error", "downstream"
    DIRECTIONS = [
        (UPSTREAM, "upstream CALL/SEND"),
        (REPLY, "upstream reply (CALLRESULT)"),
        (ERROR, "upstream error (CALLERROR)"),
        (DOWNSTREAM, "downstream filter"),
    ]
    direction = models.CharField(max_length=12, choices=DIRECTIONS)
    action = models.CharField(max_length=64, blank=True, help_text="blank = every action")
    station = models.ForeignKey(
        Station, null=True, blank=True, on_delete=models.CASCADE, help_text="blank = every station"
    )
    template = models.CharField(max_length=200)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # NULLs never collide in a unique index, so the global rules need their own
            models.UniqueConstraint(
                fields=["direction", "action", "station"],
                condition=Q(station__isnull=False),
                name="topicrule_unique_per_station",
            ),
            models.UniqueConstraint(
                fields=["direction", "action"],
                condition=Q(station__isnull=True),
                name="topicrule_unique_global",
            ),
        ]
        ordering = ["direction", "action", "station_id"]

    def __str__(self):
        return f"{self.direction} {self.action or '*'} -> {self.template}"

    def clean(self):
        if self.direction == self.DOWNSTREAM and self.action:
            raise ValidationError({"action": "a downstream filter applies to every action"})
        problem = topics.validate(self.template, downstream=self.direction == self.DOWNSTREAM)
        if problem:
            raise ValidationError({"template": problem})


class ValidationExemption(models.Model):
    """An action whose payloads are not schema-checked in the given direction."""

    DIRECTIONS = [("upstream", "from stations"), ("downstream", "to stations"), ("both", "both")]
    action = models.CharField(max_length=64)
    direction = models.CharField(max_length=12, choices=DIRECTIONS, default="both")
    note = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["action", "direction"], name="exemption_unique")
        ]

    def __str__(self):
        return f"{self.action} ({self.direction})"


class MessageLog(models.Model):
    """One frame either way, or a gateway-originated error or notice. Written in batches."""

    IN, OUT, GATEWAY = "in", "out", "gw"
    DIRECTIONS = [(IN, "station → gateway"), (OUT, "gateway → station"), (GATEWAY, "gateway")]
    OUTCOMES = [
        ("published", "published"),
        ("sent", "sent"),
        ("rejected", "rejected"),
        ("ignored", "ignored"),
        ("dropped", "dropped"),
        ("refused", "refused"),
        ("connected", "connected"),
        ("disconnected", "disconnected"),
    ]
    created = models.DateTimeField()
    # no FK constraint: log rows outlive deleted stations and bulk inserts stay cheap
    station = models.ForeignKey(
        Station, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False
    )
    cid = models.CharField(max_length=48)
    direction = models.CharField(max_length=3, choices=DIRECTIONS)
    message_type = models.PositiveSmallIntegerField(null=True, blank=True)
    unique_id = models.CharField(max_length=36, blank=True)
    action = models.CharField(max_length=64, blank=True)
    size = models.PositiveIntegerField(default=0)
    payload = models.TextField(blank=True)
    outcome = models.CharField(max_length=12, choices=OUTCOMES)
    reason = models.CharField(max_length=255, blank=True)
    topic = models.CharField(max_length=255, blank=True)

    class Meta:
        indexes = [
            # station page and portal log filtered by station, newest first (keyset on created, id)
            models.Index(fields=["cid", "-created", "-id"], name="msglog_cid_created"),
            # portal log unfiltered, newest first; prunelogs: DELETE ... WHERE created < cutoff
            models.Index(fields=["-created", "-id"], name="msglog_created"),
            # request/answer linking and the UniqueId filter
            models.Index(fields=["unique_id"], name="msglog_unique_id"),
            # portal/API log filtered by action over every station (a rare action would
            # otherwise walk msglog_created across the whole table)
            models.Index(fields=["action", "-created", "-id"], name="msglog_action_created"),
            # station page: presence history, rare rows among a busy station's frames
            models.Index(
                fields=["cid", "-created", "-id"],
                condition=Q(outcome__in=["connected", "disconnected", "refused"]),
                name="msglog_presence",
            ),
            # portal/API log filtered by a rare type (CALLERROR, CALLRESULTERROR, SEND): without
            # it, a type with few or no rows walks every row (~100 ms at 1M rows)
            models.Index(
                fields=["message_type", "-created", "-id"],
                condition=Q(message_type__in=[4, 5, 6]),
                name="msglog_rare_types",
            ),
        ]

    def __str__(self):
        return (
            f"{self.created:%H:%M:%S} {self.cid} {self.direction} {self.message_type} {self.action}"
        )


class AuditEntry(models.Model):
    """An operator's action (portal, API, admin): who did what to which station or rule, when,
    and how it went (stations/audit.py writes them)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    username = models.CharField(max_length=150)  # kept when the user is deleted
    via = models.CharField(max_length=8)  # portal, api, admin
    action = models.CharField(max_length=32, db_index=True)  # e.g. "command", "kick"
    target = models.CharField(max_length=64, db_index=True)  # a cid, or "rule 12"
    detail = models.TextField(blank=True)
    result = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.at:%Y-%m-%dT%H:%M:%SZ} {self.username} {self.action} {self.target}"

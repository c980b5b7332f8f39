"""Django admin: stations and their credentials, topic rules, exemptions, the message log.

Changelists stay cheap on big tables: joins for every FK column, no COUNT(*) of the whole log.
"""

from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.paginator import Paginator
from django.db import transaction
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from stations import audit, codes, identity, services
from stations.models import AuditEntry, MessageLog, Station, TopicRule, ValidationExemption

admin.site.site_header = admin.site.site_title = "ocppgw admin"
admin.site.site_url = "/portal/"  # "view site" leads to the operator portal
# the app sidebar took a quarter of a 1366 px laptop from every changelist; breadcrumbs remain
admin.site.enable_nav_sidebar = False


class StationForm(forms.ModelForm):
    new_password = forms.CharField(
        required=False,
        min_length=services.MIN_PASSWORD,
        max_length=services.MAX_PASSWORD,
        strip=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "size": 44}),
        label="Set / rotate password",
    )

    class Meta:
        model = Station
        fields = ["cid", "enabled", "security_profile", "validation_policy"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rotating = bool(self.instance.pk and self.instance.user_id)
        self.fields["new_password"].required = not rotating
        self.fields["new_password"].help_text = (
            f"{services.MIN_PASSWORD} to {services.MAX_PASSWORD} characters, stored only as a hash. "
            + (
                "Leave blank to keep the current one. Rotating it drops the live connection "
                "within about a second; the station must then use the new password. "
                if rotating
                else ""
            )
            + f"A random one, if you want it: {services.suggest_password()}"
        )

    def clean_new_password(self):
        password = self.cleaned_data["new_password"]
        problem = password and services.password_problem(password)
        if problem:
            raise forms.ValidationError(problem)
        return password

    def clean_cid(self):
        cid = self.cleaned_data["cid"]
        others = Station.objects.filter(cid_key=identity.key(cid)).exclude(pk=self.instance.pk)
        if others.exists():
            raise forms.ValidationError("a station with this id exists (ids ignore case)")
        if not self.instance.user_id:
            # never take over a human's account: the station's user is named after its cid
            if get_user_model().objects.filter(username__iexact=cid).exists():
                raise forms.ValidationError(f"a user named {cid!r} already exists")
        return cid


# written by the gateway, shown read-only
PRESENCE_FIELDS = ["connection_id", *Station.GATEWAY_FIELDS, "created_at"]


@admin.register(Station)
class StationAdmin(admin.ModelAdmin):
    form = StationForm
    list_display = [
        "cid",
        "enabled",
        "connected",
        "ocpp_version",
        "node",
        "last_frame_at",
        "frames_in",
        "frames_out",
    ]
    list_select_related = False  # no FK column: the station's own row has everything shown
    list_filter = ["enabled", "security_profile", "validation_policy", "ocpp_version"]
    search_fields = ["cid_key"]
    readonly_fields = ["user", "portal_link", "credentials_changed_at", *PRESENCE_FIELDS]
    fieldsets = [
        (
            None,
            {"fields": ["cid", "enabled", "security_profile", "validation_policy", "portal_link"]},
        ),
        ("Credentials", {"fields": ["new_password", "user", "credentials_changed_at"]}),
        (
            "Presence and traffic (written by the gateway)",
            {
                "classes": ["collapse"],
                "fields": PRESENCE_FIELDS,
            },
        ),
    ]

    def get_search_results(self, request, queryset, search_term):
        # cid_key is stored lowercased: match what the operator typed in any case
        return super().get_search_results(request, queryset, search_term.lower())

    @admin.display(boolean=True, ordering="connection_id")
    def connected(self, obj):
        return obj.is_connected

    @admin.display(description="Portal")
    def portal_link(self, obj):
        if not obj.pk:
            return "—"
        return format_html(
            '<a href="{}">open the station page</a>', reverse("portal:station", args=[obj.cid])
        )

    def delete_model(self, request, obj):
        services.delete_station(obj)  # its user too: a station's user is nobody else's
        audit.record(request.user, "admin", "station deleted", obj.cid)

    def delete_queryset(self, request, queryset):
        for station in queryset.select_related("user"):
            self.delete_model(request, station)

    @transaction.atomic
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        password = form.cleaned_data.get("new_password")
        if password:
            services.set_password(obj, password)
        changed = [name for name in form.changed_data if name != "new_password"]
        if not change:
            audit.record(request.user, "admin", "station created", obj.cid)
        elif changed:
            audit.record(request.user, "admin", "station updated", obj.cid, ", ".join(changed))
        if change and password:
            audit.record(request.user, "admin", "password rotated", obj.cid)  # never the secret


@admin.register(TopicRule)
class TopicRuleAdmin(admin.ModelAdmin):
    list_display = ["direction", "action_or_all", "station", "template", "updated_at"]
    list_select_related = ["station"]
    list_filter = ["direction"]
    search_fields = ["action", "template", "station__cid_key"]
    autocomplete_fields = ["station"]

    @admin.display(description="action", ordering="action")
    def action_or_all(self, obj):
        return obj.action or "(every action)"


@admin.register(ValidationExemption)
class ValidationExemptionAdmin(admin.ModelAdmin):
    list_display = ["action", "direction", "note", "updated_at"]
    list_filter = ["direction"]
    search_fields = ["action"]


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows (COUNT over a LIMITed subquery), never the whole log."""

    CAP = 10000

    @cached_property
    def count(self):
        return self.object_list[: self.CAP].count()


class FrameTypeFilter(admin.SimpleListFilter):
    """Frame types by name (CALL, CALLRESULT…) rather than the bare numbers stored."""

    title, parameter_name = "frame type", "type"

    def lookups(self, request, model_admin):
        return [(str(n), name) for n, name in codes.TYPE_NAMES.items()]

    def queryset(self, request, queryset):
        value = self.value()  # anything but a known number (a hand-edited URL) filters nothing
        known = value in {str(n) for n in codes.TYPE_NAMES}
        return queryset.filter(message_type=int(value)) if known else queryset


@admin.register(MessageLog)
class MessageLogAdmin(admin.ModelAdmin):
    """Read-only. For deep paging and time ranges use the portal's message log (keyset pages)."""

    # compact: one "frame" column instead of direction, type and action, and the cid links to
    # the portal's station page; fits 1366 px next to the filter sidebar
    list_display = ["created", "station_link", "frame", "unique_id", "outcome", "size"]
    change_list_template = "admin/stations/messagelog/change_list.html"
    list_select_related = ["station"]
    list_filter = ["direction", FrameTypeFilter, "outcome"]
    # exact matches only: they use the indexes, a LIKE '%…%' would scan millions of rows
    search_fields = ["=unique_id", "=cid", "=action"]
    raw_id_fields = ["station"]
    ordering = ["-created", "-id"]
    sortable_by = []  # every order but the indexed default would sort the whole table
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 100

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in MessageLog._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="station")
    def station_link(self, obj):
        if obj.station_id is None:
            return obj.cid or "—"  # a refused attempt names no known station
        return format_html(
            '<a href="{}">{}</a>', reverse("portal:station", args=[obj.cid]), obj.cid
        )

    @admin.display(description="frame")
    def frame(self, obj):
        return " ".join(
            part
            for part in (obj.direction, codes.TYPE_NAMES.get(obj.message_type, ""), obj.action)
            if part
        )

    def changelist_view(self, request, extra_context=None):
        # the same filter in the portal's log, which pages through time ranges without counting
        params = {
            "direction": request.GET.get("direction__exact", ""),
            "type": request.GET.get("type", ""),
        }
        query = urlencode({k: v for k, v in params.items() if v})
        portal = reverse("portal:messages") + (f"?{query}" if query else "")
        return super().changelist_view(request, {**(extra_context or {}), "portal_log_url": portal})


class AccountKind(admin.SimpleListFilter):
    """Station users (username = cid, one per Station) apart from the people who operate."""

    title, parameter_name = "account", "kind"

    def lookups(self, request, model_admin):
        return [("operator", "operators"), ("station", "stations")]

    def queryset(self, request, queryset):
        if self.value() == "station":
            return queryset.filter(station__isnull=False)
        if self.value() == "operator":
            return queryset.filter(station__isnull=True)
        return queryset


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class OperatorAwareUserAdmin(UserAdmin):
    """Django's user admin, with station accounts told apart (set through the station, not here)."""

    list_display = [*UserAdmin.list_display, "station_link"]
    list_filter = [AccountKind, *UserAdmin.list_filter]
    list_select_related = ["station"]

    @admin.display(description="Station")
    def station_link(self, obj):
        station = getattr(obj, "station", None)
        if station is None:
            return "—"
        url = reverse("admin:stations_station_change", args=[station.pk])
        return format_html('<a href="{}">{}</a>', url, station.cid)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "username", "via", "action", "target", "result"]
    list_filter = ["via", "action"]
    search_fields = ["target", "username"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the trail is read-only; it is pruned by nobody but the database admin

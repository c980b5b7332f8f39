from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.urls import path

from portal import auditviews, logviews, ruleviews, views

app_name = "portal"
urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="portal/login.html", authentication_form=AdminAuthenticationForm
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="portal:login"), name="logout"),
    path("", views.stations, name="stations"),
    path("stations.json", views.stations_live, name="stations-live"),
    path("stations/<str:cid>/", views.station, name="station"),
    path("stations/<str:cid>/live.json", views.station_live, name="station-live"),
    path("stations/<str:cid>/kick", views.kick, name="kick"),
    path("stations/<str:cid>/policy", views.set_policy, name="policy"),
    path("stations/<str:cid>/command", views.send_command, name="command"),
    path(
        "stations/<str:cid>/command/<str:unique_id>.json",
        views.command_answer,
        name="command-answer",
    ),
    path("messages/", logviews.messages, name="messages"),
    path("messages/export", logviews.messages_export, name="messages-export"),
    path("messages/<int:pk>/", logviews.message, name="message"),
    path("traffic/", logviews.traffic_page, name="traffic"),
    path("traffic.json", logviews.traffic_data, name="traffic-data"),
    path("rules/", ruleviews.rules, name="rules"),
    path("rules/new", ruleviews.rule_create, name="rule-create"),
    path("rules/preview.json", ruleviews.rule_preview, name="rule-preview"),
    path("rules/<int:pk>/", ruleviews.rule_edit, name="rule-edit"),
    path("rules/<int:pk>/save", ruleviews.rule_update, name="rule-update"),
    path("rules/<int:pk>/delete", ruleviews.rule_delete, name="rule-delete"),
    path("exemptions/", ruleviews.exemptions, name="exemptions"),
    path("audit/", auditviews.audit_trail, name="audit"),
    path("exemptions/new", ruleviews.exemption_create, name="exemption-create"),
    path("exemptions/<int:pk>/save", ruleviews.exemption_update, name="exemption-update"),
    path("exemptions/<int:pk>/delete", ruleviews.exemption_delete, name="exemption-delete"),
]

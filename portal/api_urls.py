from django.urls import path
from rest_framework.schemas import get_schema_view

from portal import api

app_name = "api"
urlpatterns = [
    path("", api.ApiRoot.as_view(), name="root"),
    path("stations/", api.StationList.as_view(), name="stations"),
    path("stations/<str:cid>/", api.StationDetail.as_view(), name="station"),
    path("stations/<str:cid>/kick/", api.StationKick.as_view(), name="kick"),
    path("stations/<str:cid>/password/", api.StationPassword.as_view(), name="password"),
    path("stations/<str:cid>/commands/", api.StationCommand.as_view(), name="commands"),
    path(
        "stations/<str:cid>/commands/<str:unique_id>/",
        api.CommandAnswer.as_view(),
        name="command-answer",
    ),
    path("messages/", api.MessageList.as_view(), name="messages"),
    path(
        "schema/",
        get_schema_view(
            title="ocppgw API",
            description="Stations, the message log and commands of the OCPP gateway.",
            version="1",
        ),
        name="schema",
    ),
]

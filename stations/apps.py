from django.apps import AppConfig


class StationsConfig(AppConfig):
    name = "stations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from stations import signals  # noqa: F401 - connects the credential-change handlers

from django.apps import AppConfig


class StationsConfig(AppConfig):
    name = "stations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings

        import stations.signals  # noqa: F401 - connects the credential-change handlers
        from stations import validation
        from stations.schema_cache import SchemaCache

        if settings.OCPPGW_SCHEMA_CACHE:  # compiled validators shared by every start
            validation.use_cache(SchemaCache(settings.OCPPGW_SCHEMA_CACHE))

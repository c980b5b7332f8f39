from django.apps import AppConfig


class StationsConfig(AppConfig):
    name = "stations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings

        from stations import signals, validation  # signals: connects the credential handlers
        from stations.schema_cache import SchemaCache

        del signals

        if settings.OCPPGW_SCHEMA_CACHE:  # compiled validators shared by every start
            validation.use_cache(SchemaCache(settings.OCPPGW_SCHEMA_CACHE))

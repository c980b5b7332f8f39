"""Credential changes: every gateway process forgets remembered verifications within a second."""

import datetime

from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save
from django.dispatch import receiver

from stations.models import Station


def _now():
    return datetime.datetime.now(datetime.UTC)


@receiver(pre_save, sender=get_user_model())
def user_credentials_changed(sender, instance, raw=False, **kwargs):
    if raw or instance.pk is None:
        return
    old = sender.objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    if old and (old[0] != instance.password or old[1] != instance.is_active):
        Station.objects.filter(user_id=instance.pk).update(credentials_changed_at=_now())


@receiver(pre_save, sender=Station)
def station_access_changed(sender, instance, raw=False, **kwargs):
    if raw or instance.pk is None:
        return
    old = sender.objects.filter(pk=instance.pk).values_list("enabled", "security_profile").first()
    if old and old != (instance.enabled, instance.security_profile):
        instance.credentials_changed_at = _now()

"""Credential changes and deletions: every gateway process forgets remembered verifications (and
closes what must close) within a second."""

import datetime

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, pre_save
from django.dispatch import receiver

from stations.models import DeletedStation, Station


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
    fields = ("enabled", "security_profile", "validation_policy")
    old = sender.objects.filter(pk=instance.pk).values_list(*fields).first()
    if old is None:
        return
    if old[:2] != (instance.enabled, instance.security_profile):
        instance.credentials_changed_at = _now()
    if old[2] != instance.validation_policy:
        instance.policy_changed_at = _now()


@receiver(post_delete, sender=Station)
def station_deleted(sender, instance, **kwargs):
    DeletedStation.objects.create(cid_key=instance.cid_key, deleted_at=_now())

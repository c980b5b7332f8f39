"""Portal pages for configuration the gateway polls every second: topic rules and exemptions.

A saved row reaches every gateway process within about a second (gateway._poll_forever), so
there is nothing to reload or restart here.
"""

from django.conf import settings
from django.contrib import messages
from django.forms import ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.access import post_with_permission, staff_required
from portal.forms import ExemptionForm, PreviewForm, TopicRuleForm
from stations import audit, validation
from stations.models import TopicRule, ValidationExemption

# the seed's own example comes first in the help (seed 000: per-action topic override)
EXAMPLES = [
    ("upstream", "BootNotification", "", "ocpp/cp/${cid}/Notify/${action}"),
    ("upstream", "MeterValues", "", "ocpp/cp/${cid}/meter"),
    ("reply", "", "CP001", "ocpp/cp/${cid}/Reply/${action}"),
    ("downstream", "", "CP001", "legacy/cs/${cid}/#"),
]


def _known_actions() -> list[str]:
    names = set()
    for version in validation.VERSIONS:
        names.update(validation.actions(version))
    return sorted(names)


def _defaults() -> list[tuple[str, str]]:
    s = settings
    return [
        ("upstream", s.OCPPGW_UPSTREAM_TOPIC),
        ("reply", s.OCPPGW_REPLY_TOPIC),
        ("error", s.OCPPGW_ERROR_TOPIC),
        ("downstream", s.OCPPGW_DOWNSTREAM_TOPIC),
        ("notice (gateway notices)", s.OCPPGW_NOTICE_TOPIC),
        ("presence (retained)", s.OCPPGW_PRESENCE_TOPIC),
        ("node status (retained)", "ocpp/gw/nodes/<node>"),
    ]


def _rules_page(request, form, editing=None, status=200):
    context = {
        "rules": TopicRule.objects.select_related("station"),
        "form": form,
        "editing": editing,
        "preview": PreviewForm(),
        "examples": EXAMPLES,
        "defaults": _defaults(),
        "known_actions": _known_actions(),
    }
    return render(request, "portal/rules.html", context, status=status)


@staff_required
def rules(request):
    """Every topic rule, the form for a new one, and the help."""
    return _rules_page(request, TopicRuleForm(initial={"direction": TopicRule.UPSTREAM}))


@staff_required
def rule_edit(request, pk):
    rule = get_object_or_404(TopicRule.objects.select_related("station"), pk=pk)
    return _rules_page(request, TopicRuleForm(instance=rule), editing=rule)


@post_with_permission("stations.add_topicrule")
def rule_create(request):
    form = TopicRuleForm(request.POST)
    if not form.is_valid():
        return _rules_page(request, form, status=400)
    rule = form.save()
    audit.record(request.user, "portal", "rule created", f"rule {rule.pk}", str(rule))
    messages.success(request, f"Saved: {rule}. Every gateway process applies it within 2 s.")
    return redirect("portal:rules")


@post_with_permission("stations.change_topicrule")
def rule_update(request, pk):
    rule = get_object_or_404(TopicRule, pk=pk)
    form = TopicRuleForm(request.POST, instance=rule)
    if not form.is_valid():
        return _rules_page(request, form, editing=rule, status=400)
    form.save()
    audit.record(request.user, "portal", "rule updated", f"rule {rule.pk}", str(rule))
    messages.success(request, f"Updated: {rule}.")
    return redirect("portal:rules")


@post_with_permission("stations.delete_topicrule")
def rule_delete(request, pk):
    rule = get_object_or_404(TopicRule, pk=pk)
    audit.record(request.user, "portal", "rule deleted", f"rule {rule.pk}", str(rule))
    rule.delete()
    messages.success(request, f"Deleted: {rule}.")
    return redirect("portal:rules")


@staff_required
def rule_preview(request):
    """Render a template for a sample cid and action, before the rule is saved (no queries)."""
    form = PreviewForm(request.GET)
    if not form.is_valid():
        errors = [f"{k}: {' '.join(v)}" for k, v in form.errors.items()]
        return JsonResponse({"error": "; ".join(errors)}, status=400)
    try:
        topic = form.render()
    except ValidationError as exc:
        return JsonResponse({"error": " ".join(exc.messages)}, status=400)
    return JsonResponse({"topic": topic})


@staff_required
def exemptions(request):
    """Actions whose payloads are not schema-checked, per direction."""
    return _exemptions_page(request, ExemptionForm())


def _exemptions_page(request, form, status=200):
    context = {
        "exemptions": ValidationExemption.objects.order_by("action", "direction"),
        "form": form,
        "known_actions": _known_actions(),
        "mode": settings.OCPPGW_VALIDATION,
        "failure": settings.OCPPGW_VALIDATION_FAILURE,
    }
    return render(request, "portal/exemptions.html", context, status=status)


@post_with_permission("stations.add_validationexemption")
def exemption_create(request):
    form = ExemptionForm(request.POST)
    if not form.is_valid():
        return _exemptions_page(request, form, status=400)
    exemption = form.save()
    audit.record(request.user, "portal", "exemption created", exemption.action, str(exemption))
    messages.success(request, f"{exemption} is no longer schema-checked.")
    return redirect("portal:exemptions")


@post_with_permission("stations.change_validationexemption")
def exemption_update(request, pk):
    exemption = get_object_or_404(ValidationExemption, pk=pk)
    form = ExemptionForm(request.POST, instance=exemption)
    if not form.is_valid():
        return _exemptions_page(request, form, status=400)
    form.save()
    audit.record(request.user, "portal", "exemption updated", exemption.action, str(exemption))
    messages.success(request, f"Updated {exemption}.")
    return redirect("portal:exemptions")


@post_with_permission("stations.delete_validationexemption")
def exemption_delete(request, pk):
    exemption = get_object_or_404(ValidationExemption, pk=pk)
    audit.record(request.user, "portal", "exemption deleted", exemption.action, str(exemption))
    exemption.delete()
    messages.success(request, f"{exemption} is schema-checked again.")
    return redirect("portal:exemptions")

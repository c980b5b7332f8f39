from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import render

from stations.models import Station


@staff_member_required
def stations(request):
    return render(request, "portal/stations.html", {"stations": Station.objects.for_portal()})

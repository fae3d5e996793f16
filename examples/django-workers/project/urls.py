from django.contrib import admin
from django.urls import path
from django.views.generic import TemplateView

from dashboard.consumers import DashboardConsumer
from dashboard.views import push_metric
from django_estuary.views import events_view
from notifications.views import notify

from .connect import Connect

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html")),
    path("admin/", admin.site.urls),
    # Estuary asks who is connecting ([auth.callback] url).
    path("estuary/connect/", Connect.as_view()),
    # The HTTP transport: a route with http = ".../estuary/events/dashboard/"
    # instead of channel = "dashboard" (no worker needed for it then).
    path("estuary/events/dashboard/", events_view(DashboardConsumer)),
    # Views that push to sockets through the channel layer.
    path("notify/<int:user_id>/", notify),
    path("dashboard/metrics/<str:metric>/", push_metric),
]

from django.contrib.auth.views import LoginView
from django.urls import path

from estuary_connect import estuary_connect

urlpatterns = [
    path("login/", LoginView.as_view()),
    path("estuary/connect/", estuary_connect),
]

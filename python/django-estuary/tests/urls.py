from django.urls import path

from django_estuary.views import ConnectView, Reject, connect_view, events_view

from . import consumers


class MembersOnly(ConnectView):
    """Refuses anonymous visitors, adds a group for staff and data for all."""

    def anonymous(self, request, payload):
        raise Reject(close_code=4403, reason="log in first")

    def get_groups(self, request, user):
        return [f"user.{user.pk}"] + (["staff"] if user.is_staff else [])

    def get_data(self, request, user):
        return {"plan": "pro"}


urlpatterns = [
    path("estuary/connect/", connect_view),
    path("estuary/members/", MembersOnly.as_view()),
    path("estuary/events/", events_view(consumers.Echo)),
    path("estuary/boom/", events_view(consumers.Boom)),
    path("estuary/handlers/", consumers.Handlers.as_view()),
    path("estuary/files/", consumers.Files.as_view()),
    path("estuary/int-keys/", consumers.IntKeys.as_view()),
]

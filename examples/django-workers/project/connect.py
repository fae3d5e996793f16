"""Estuary's connect callback ([auth.callback] in estuary.toml): who is
connecting, from Django's own session cookie, which Estuary forwards."""

from django_estuary.views import ConnectView


class Connect(ConnectView):
    """A logged-in user comes in with its id, username, is_staff and
    is_superuser; a visitor comes in anonymously (the routes say where that
    is enough). No groups here: each route in estuary.toml names its own
    (the notifications route joins "user.{user.id}")."""

    def get_groups(self, request, user):
        return []

"""HTTP routes: none, the benchmark only uses the WebSocket endpoint."""

urlpatterns = []

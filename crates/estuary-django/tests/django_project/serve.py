# Serves the project over HTTP on a free loopback port (Django's own WSGI handler,
# the standard library's threaded server) and prints the port on the first line of
# stdout, so a test waits for that line instead of polling. Stops with stdin.
import os
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.wsgi import get_wsgi_application


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write("django: " + (format % args) + "\n")


server = make_server("127.0.0.1", 0, get_wsgi_application(), server_class=Server, handler_class=QuietHandler)
print(server.server_port, flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
# The test closes stdin (or dies): stop.
sys.stdin.read()
server.shutdown()

#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/).

The inputs are real ones: route patterns and paths of the chat app and the
docs, chat frames of the protocol in docs/CHAT.md, stored members laid out
byte for byte as channels_redis writes them (section 3.4 of the wire spec),
encrypted ones made with the `cryptography` package's Fernet (the one
channels_redis uses) under the key the `stored` target holds, and request
heads as browsers and the interop clients send them.

Run it after changing a seed; it rewrites the seed files it owns (`seed-*`)
and leaves other files (inputs kept from runs, regressions) alone.
Needs Python 3 and, for the encrypted members, `cryptography`.
"""

import base64
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "estuary-fuzz-key"  # fuzz/src/targets/stored.rs: KEY


def pack(v):
    """msgpack as Python's msgpack.packb writes it (use_bin_type=True)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2**8:
            return b"\xcc" + struct.pack(">B", v)
        if 0 <= v < 2**16:
            return b"\xcd" + struct.pack(">H", v)
        if 0 <= v < 2**32:
            return b"\xce" + struct.pack(">I", v)
        if 0 <= v < 2**64:
            return b"\xcf" + struct.pack(">Q", v)
        if -(2**7) <= v:
            return b"\xd0" + struct.pack(">b", v)
        if -(2**15) <= v:
            return b"\xd1" + struct.pack(">h", v)
        if -(2**31) <= v:
            return b"\xd2" + struct.pack(">i", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n < 2**8:
            return b"\xd9" + bytes([n]) + b
        if n < 2**16:
            return b"\xda" + struct.pack(">H", n) + b
        return b"\xdb" + struct.pack(">I", n) + b
    if isinstance(v, bytes):
        n = len(v)
        if n < 2**8:
            return b"\xc4" + bytes([n]) + v
        return b"\xc5" + struct.pack(">H", n) + v
    if isinstance(v, (list, tuple)):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


SPECIFIC = "specific.e58a6c4c9a47404a84da9cd7379e7920!cc3b11a8c7af4524939d493707293338"
PREFIX = bytes.fromhex("7918c50c94b4f74ac8590e6e")


def routes():
    seeds = {
        "chat": "ws/chat/<str:room>/\n/ws/chat/lobby/\n/ws/chat/lobby\n/ws/chat/\n/ws/chat/a/b/",
        "converters": "a/<str:s>/<int:i>/<slug:g>/<uuid:u>/<path:rest>\n"
        "/a/x.y/42/my-slug_1/0c6d7f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f/deep/er/path",
        "axum": "/ws/{session}\n/ws/abc\n/ws/",
        "axum-rest": "files/{*rest}\n/files/a/b\n/files/",
        "default-conv": "ws/<room>/\n/ws/r1/",
        "literal": "v1.0/<int:n>\n/v1.0/3\n/v1x0/3",
        "root": "/\n/\n//",
        "unicode": "caf\u00e9/<str:x>\n/caf\u00e9/\u00fc\n/cafe/x",
        "adjacent": "<a>-<b>\n/x-y-z\n/-\n/x-",
        "bad-conv": "a/<float:x>\n/a/1.5",
        "unclosed": "a/<int:x\n/a/1",
        "dup": "<a>/<a>\n/x/y",
        "re-chat": "re:^ws/chat/(?P<room>[A-Za-z0-9_-]{1,94})/$\n/ws/chat/lobby/\n/ws/chat/lob by/",
        "re-prefix": "re:^stream/\n/stream/anything\n/xstream/",
        "re-word": "re:^ws/(?P<room>\\w+)/(?P<n>\\d+)$\n/ws/\u00e9t\u00e9/12\n/ws/a/1/",
        "re-bad": "re:(unclosed\n/x",
        "re-escaped-dollar": "re:^price\\$\n/price$\n/price",
        "re-slash": "re:^/ws/$\n/ws/\n/ws",
    }
    for name, text in seeds.items():
        write("route", name, text)


def queries():
    seeds = {
        "typed": "page=3&offset=-7&ratio=0.5&verbose=true&token=abc&limit=9&mode=voice&llm=chatgpt\n\n42",
        "empty-token": "token=&limit=\nsessionid=abc\n-1",
        "bad-number": "page=two&limit=300\ntheme=\"dark\"\nx",
        "repeated": "a=1&a=2&b=%20x&tag=1&tag=2\na=1; a=2\n0c6d7f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f",
        "plus-percent": "llm=a+b%2Bc&mode=TEXT\n; =;x\n127.0.0.1",
        "bad-percent": "page=%zz&token=%ff%fe\nk=v;;\n::1",
        "no-value": "verbose&page&=x&&\n=v\ntrue",
        "unicode": "llm=%C3%A9t%C3%A9&mode=voice\nname=\u00e9\n\u00e9",
        "huge-number": "page=4294967296&offset=9223372036854775808&ratio=1e400\n\n18446744073709551616",
        "django-chat": "username=alice\ncsrftoken=x; sessionid=y\nlobby",
        "empty": "",
        "cookies-only": "\n a = b ; c=\"d\" ;e\n",
    }
    for name, text in seeds.items():
        write("query", name, text)


def chat():
    frames = {
        "frame-basic": '{"message": "hello", "username": "alice"}',
        "frame-no-name": '{"message": "hello"}',
        "frame-null-name": '{"message": "hi", "username": null}',
        "frame-empty": '{"message": "   "}',
        "frame-long-name": '{"message": "x", "username": "' + "n" * 51 + '"}',
        "frame-not-object": '["message", "hi"]',
        "frame-not-json": "hello there",
        "frame-number": '{"message": 5}',
        "frame-unicode": '{"message": "\\u00e9t\\u00e9 \\ud83d\\ude00", "username": "\\u0000"}',
        "frame-extra": '{"message": "hi", "username": "bob", "history": true, "x": [1, {"y": null}]}',
        "event-json": '{"type": "chat.message", "message": "hi", "username": "dj", "id": "abc", "ts": 1732272000123}',
        "event-json-join": '{"type": "user.join", "username": "alice"}',
        "event-json-unknown": '{"type": "chat.typing", "username": "alice"}',
        "event-json-position": '{"type": "chat.message", "message": "hi", "username": "dj",'
                               ' "__position__": {"offset": 17, "epoch": "k3vQ9cXa"}}',
        "event-json-presence": '{"type": "presence.diff", "group": "chat_lobby", "version": 12,'
                               ' "joins": {"42": {"meta": {"username": "ann", "verified": true}, "version": 12},'
                               ' "guest:bob": {"meta": {"username": "bob"}, "version": 11}},'
                               ' "leaves": {"7": {"meta": {"username": "cy"}, "version": 10}}}',
    }
    for name, text in frames.items():
        write("chat", name, text)
    write("chat", "event-django", pack({"type": "chat.message", "message": "hi"}))
    write("chat", "event-django-user", pack({"type": "chat.message", "message": "hi", "username": "dj"}))
    write("chat", "event-estuary", pack({"type": "chat.message", "message": "hello", "username": "alice",
                                         "id": "0c6d7f5e1b2a4c3d8e9f0a1b2c3d4e5f", "ts": 1732272000123}))
    write("chat", "event-join", pack({"type": "user.join", "username": "alice"}))
    write("chat", "event-leave", pack({"type": "user.leave", "username": "alice"}))
    write("chat", "event-bin-message", pack({"type": "chat.message", "message": b"hi"}))
    write("chat", "event-neg-ts", pack({"type": "chat.message", "message": "x", "ts": -(2**63)}))
    write("chat", "event-position", pack({"type": "chat.message", "message": "x",
                                          "__position__": {"offset": 3, "epoch": "k3vQ9cXa"}}))
    write("chat", "event-presence", pack({"type": "presence.diff", "group": "chat_lobby", "version": 5,
                                          "joins": {"guest:ann": {"meta": {"username": "ann"}, "version": 5}},
                                          "leaves": {}}))


def names():
    seeds = {
        "channel": "thumbnails.resize",
        "specific": "specific.abc!def",
        "specific-empty-local": "specific.x!",
        "real-specific": SPECIFIC,
        "group": "chat_lobby",
        "room": "lobby-1_A",
        "room-max": "r" * 94,
        "max": "a" * 99,
        "too-long": "a" * 100,
        "bang-first": "!a",
        "two-bangs": "a!b!c",
        "space": "bad name",
        "accent": "caf\u00e9",
        "empty": "",
        "nul": "a\x00b",
        "dotted": "...",
    }
    for name, text in seeds.items():
        write("names", name, text)


def stored():
    chat_msg = {"type": "chat.message", "message": "hi"}
    body = pack(chat_msg)
    # Section 3.4: group_send (array), direct send (str), plain channel (none).
    group = pack({**chat_msg, "__asgi_channel__": [SPECIFIC]})
    direct = pack({**chat_msg, "__asgi_channel__": SPECIFIC})
    mixed = pack({"type": "task.run", "n": 1, "b": b"\x00\x01", "f": 1.5, "l": [1, "a"], "none": None, "t": True})
    many = pack({"type": "chat.message", "message": "to two",
                 "__asgi_channel__": ["specific.a!b", "bad name!", "specific.c!d"]})
    members = {
        "group-send": PREFIX + group,
        "direct-send": PREFIX + direct,
        "plain-channel": b"RUSTRUSTRUST" + mixed,
        "plain-chat": PREFIX + body,
        "bad-target": PREFIX + many,
        "nested": PREFIX + pack({"type": "deep", "a": [[[[{"b": [{"c": {}}]}]]]], "m": {"k": {"k": {"k": 1}}}}),
        "ints": PREFIX + pack({"type": "ints", "a": 2**64 - 1, "b": -(2**63), "c": -1, "d": 255, "e": 65536}),
        "unicode": PREFIX + pack({"type": "chat.message", "message": "\u00e9t\u00e9 \U0001f600", "username": "\u00fc"}),
        "type-last": PREFIX + pack({"message": "x", "type": "late.type"}),
        "no-type": PREFIX + pack({"message": "x"}),
        "not-map": PREFIX + pack(["type", "x"]),
        "short": b"short",
        "ext": PREFIX + b"\x82\xa4type\xa1x\xa1e\xd6\xff\x00\x00\x00\x01",
        "float32": PREFIX + b"\x82\xa4type\xa1x\xa1f\xca\x3f\xc0\x00\x00",
    }
    try:
        from cryptography.fernet import Fernet
    except ImportError:
        Fernet = None
        print("cryptography is not installed: no encrypted members")
    if Fernet is not None:
        fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(KEY.encode()).digest()))
        members["encrypted-group-send"] = PREFIX + fernet.encrypt(group)
        members["encrypted-direct-send"] = PREFIX + fernet.encrypt(direct)
        members["encrypted-plain"] = b"RUSTRUSTRUST" + fernet.encrypt(mixed)
        other = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"another key").digest()))
        members["encrypted-other-key"] = PREFIX + other.encrypt(group)
    for name, data in members.items():
        write("stored", name, data)


def mask(payload, opcode=0x1, key=b"\x12\x34\x56\x78"):
    """A client-to-server WebSocket frame (masked, as RFC 6455 requires)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def http():
    upgrade = (
        "GET /ws/chat/lobby/?username=alice HTTP/1.1\r\nHost: localhost:8000\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: http://localhost:8000\r\n\r\n"
    )
    browser = (
        "GET /ws/chat/lobby/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: keep-alive, Upgrade\r\n"
        "Pragma: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0\r\nUpgrade: websocket\r\n"
        "Origin: http://127.0.0.1:8000\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n"
        "Cookie: sessionid=abc; csrftoken=def\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n"
    )
    heads = {
        "upgrade": upgrade,
        "browser": browser,
        "bad-key": upgrade.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
        "old-version": upgrade.replace("Version: 13", "Version: 8"),
        "http10": upgrade.replace("HTTP/1.1", "HTTP/1.0"),
        "post-upgrade": upgrade.replace("GET", "POST", 1),
        "evil-origin": upgrade.replace("http://localhost:8000", "http://attacker.test"),
        "evil-host": upgrade.replace("Host: localhost:8000", "Host: rebind.attacker.test"),
        "no-host": upgrade.replace("Host: localhost:8000\r\n", ""),
        "ipv6-host": upgrade.replace("localhost:8000", "[::1]:8000"),
        "bad-room": upgrade.replace("/ws/chat/lobby/", "/ws/chat/a%20b%ff/"),
        "no-route": upgrade.replace("/ws/chat/lobby/", "/ws/nowhere/"),
        "page": "GET /chat/lobby/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "health": "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "rooms": "GET /api/rooms HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        "folded": "GET /chat/ HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
    }
    for name, text in heads.items():
        write("http-checks", name, text)
        write("http-server", name, text)
    push = '{"type": "chat.message", "message": "from the push API", "username": "ops"}'
    write("http-server", "push", "POST /api/groups/chat_lobby/send HTTP/1.1\r\nHost: localhost\r\n"
          "Authorization: Bearer fuzz-token\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(push)}\r\nConnection: close\r\n\r\n{push}")
    room = '{"message": "hello room", "username": "ops"}'
    write("http-server", "push-room", "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: localhost\r\n"
          "Authorization: Bearer fuzz-token\r\nContent-Type: application/json\r\n"
          f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len(room):x}\r\n{room}\r\n0\r\n\r\n")
    write("http-server", "push-no-token", "POST /api/channels/specific.a!b/send HTTP/1.1\r\nHost: localhost\r\n"
          f"Content-Length: {len(push)}\r\nConnection: close\r\n\r\n{push}")
    frames = (mask(b'{"message": "hello", "username": "alice"}') + mask(b"not json") + mask(b"\x00\x01", 0x2)
              + mask(b"", 0x9) + mask(b'{"message": "' + b"x" * 200 + b'"}') + mask(b"\x03\xe8bye", 0x8))
    write("http-server", "upgrade-then-frames", upgrade.encode() + frames)
    write("http-server", "upgrade-fragmented", upgrade.encode()
          + bytes([0x01, 0x85]) + b"\x00\x00\x00\x00" + b'{"mes'
          + bytes([0x80, 0x8e]) + b"\x00\x00\x00\x00" + b'sage": "hi"}  ')
    write("http-server", "upgrade-bad-utf8", upgrade.encode() + mask(b'{"message": "\xff"}'))


def jwt():
    """Tokens as the `jwt` target checks them (its secret and audience),
    claims and headers that it signs itself, and JWKS documents."""
    import hmac
    import json

    secret = b"fuzz-jwt-secret"  # fuzz/src/targets/jwt.rs: SECRET

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def token(header, claims, key=secret):
        message = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = hmac.new(key, message.encode(), hashlib.sha256).digest()
        return message + "." + b64(sig)

    good = {"sub": "1", "name": "alice", "aud": "fuzz", "iss": "https://fuzz.test/", "exp": 4102444800}
    write("jwt", "token-valid", token({"alg": "HS256", "typ": "JWT"}, good))
    write("jwt", "token-kid", token({"alg": "HS256", "kid": "rsa"}, dict(good, aud=["x", "fuzz"])))
    write("jwt", "token-expired", token({"alg": "HS256"}, dict(good, exp=1)))
    write("jwt", "token-none", b64(b'{"alg":"none"}') + "." + b64(json.dumps(good).encode()) + ".")
    write("jwt", "token-wrong-key", token({"alg": "HS256"}, good, b"another secret"))
    write("jwt", "claims-valid", json.dumps(dict(good, preferred_username="al", roles=["a", "b"])))
    write("jwt", "claims-odd-numbers", '{"sub": 7, "aud": "fuzz", "iss": "https://fuzz.test/", '
          '"exp": 1e400, "nbf": -1, "iat": 18446744073709551616}')
    write("jwt", "claims-nested", json.dumps(dict(good, sub="", name={"a": [[[]]]}, nbf=4102444800)))
    write("jwt", "header-kid", '{"alg": "HS256", "kid": "ec", "typ": "JWT", "crit": ["exp"]}')
    write("jwt", "header-odd-alg", '{"alg": "RS256", "kid": 5}')
    jwks = open(os.path.join(HERE, "..", "crates", "estuary-jwt", "tests", "keys", "jwks.json")).read()
    write("jwt", "jwks-test-keys", jwks)
    write("jwt", "jwks-odd", '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "EC", "crv": "P-256", '
          '"x": "' + "A" * 43 + '", "y": "' + "A" * 43 + '", "kid": "k1"}, {"kty": "RSA", "use": "enc"}]}')


def callback():
    """Answers of a connect callback (crates/estuary-callback/src/lib.rs), as
    the documented Django view and other applications write them."""
    import json

    write("callback", "accept-django", json.dumps({"user": {"id": 42, "name": "alice", "attributes": {"is_staff": False}},
                                                   "groups": ["user.42"]}))
    write("callback", "accept-full", json.dumps({"user": {"id": "u-7", "name": "bob", "attributes": {"roles": ["a"]},
                                                          "expires_at": 4102444800},
                                                 "groups": ["user.7", "news", "tenant.acme"], "data": {"plan": "pro"}}))
    write("callback", "accept-anonymous", "{}")
    write("callback", "accept-guest", json.dumps({"user": None, "groups": ["public"]}))
    write("callback", "reject-status", json.dumps({"reject": {"status": 403, "reason": "banned"}}))
    write("callback", "reject-close", json.dumps({"reject": {"close_code": 4403, "reason": "log in first"}}))
    write("callback", "reject-policy", json.dumps({"reject": {"close_code": 1008}}))
    write("callback", "bad-misspelt", json.dumps({"user": {"id": "1"}, "group": ["user.1"]}))
    write("callback", "bad-mixed", json.dumps({"reject": {"status": 403}, "groups": ["a"]}))
    write("callback", "bad-group", json.dumps({"groups": ["no spaces", "x" * 120]}))
    write("callback", "bad-array", "[]")


def frame(first, payload, key=b"\x12\x34\x56\x78"):
    """A client frame with any first byte (FIN, reserved bits, opcode)."""
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def codec():
    # ws-read: a chunk step, a limit selector, then the client's bytes.
    read = {
        "text": frame(0x81, "h\u00e9llo".encode()),
        "binary-126": frame(0x82, bytes(range(126))),
        "fragments-ping": frame(0x01, b"ab") + frame(0x89, b"hi") + frame(0x80, b"cd"),
        "close-normal": frame(0x88, struct.pack(">H", 1000) + b"bye"),
        "close-empty": frame(0x88, b""),
        "close-bad-code": frame(0x88, struct.pack(">H", 1005)),
        "bad-utf8-fragment": frame(0x01, "\u03ba".encode()) + frame(0x80, b"\xf4\x90\x80\x80"),
        "reserved-bits": frame(0xC1, b"x"),
        "unmasked": bytes([0x81, 0x01]) + b"x",
        "continuation-alone": frame(0x80, b"x"),
        "too-big": frame(0x82, bytes(2000)),
        "pong-then-text": frame(0x8A, b"") + frame(0x81, b"ok"),
    }
    for i, (name, data) in enumerate(read.items()):
        write("ws-read", name, bytes([i * 5 % 32, 3]) + data)
    # ws-roundtrip: a step, a mask, then (kind, length, payload) records.
    trips = {
        "one-text": b"\x01\x05hello",
        "fragmented-text": b"\x07\x06" + "\u03ba\u03bb\u03bc".encode(),
        "binary-ping": b"\x14\x04\x00\x01\x02\x03",
        "empty": b"\x01\x00\x00\x00",
        "long": b"\x00\xff" + bytes(255),
        "many": b"".join(bytes([k, 3]) + b"abc" for k in range(0, 32, 3)),
        "emoji": b"\x1f\x08" + "\U0001f600\U0001f601".encode(),
        "mixed": b"\x01\x02hi\x02\x02\xff\xfe\x11\x01x",
    }
    for i, (name, data) in enumerate(trips.items()):
        write("ws-roundtrip", name, bytes([i, 0xA1, 0xB2, 0xC3, 0xD4]) + data)


routes()
queries()
chat()
names()
stored()
http()
jwt()
callback()
codec()

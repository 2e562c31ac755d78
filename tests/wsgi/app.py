"""A real wsgiref upstream (Python's standard library) for the gateway's
authorization tests, on 127.0.0.1 only. Prints `listening PORT` once it accepts
connections.

It trusts what a gateway-protected app trusts: the identity headers
(`X-Intraport-Roles`, which wsgiref, like every CGI-style server, reads as
`HTTP_X_INTRAPORT_ROLES`, so `X_Intraport_Roles` lands in the same variable),
`X-Real-IP` for the client address, and, as Symfony and IIS URL Rewrite do,
`X-Original-URL` / `X-Rewrite-URL` as the path to serve.
"""

import ipaddress
import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    override = environ.get("HTTP_X_ORIGINAL_URL") or environ.get("HTTP_X_REWRITE_URL")
    if override:
        path = override.split("?", 1)[0]
    roles = [r.strip() for r in environ.get("HTTP_X_INTRAPORT_ROLES", "").split(",")]
    real_ip = environ.get("HTTP_X_REAL_IP", environ.get("REMOTE_ADDR", ""))

    def answer(status, body, ctype="text/plain"):
        data = body.encode()
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))])
        return [data]

    if path == "/admin/secret":
        return answer("200 OK", "wsgi: the admin secret")
    if path == "/writer/secret":
        if "Writer" in roles:
            return answer("200 OK", "wsgi: the writer secret")
        return answer("403 Forbidden", "wsgi: Writer role required")
    if path == "/internal/secret":
        try:
            internal = ipaddress.ip_address(real_ip) in ipaddress.ip_network("10.0.0.0/8")
        except ValueError:
            internal = False
        if internal:
            return answer("200 OK", "wsgi: the internal secret")
        return answer("403 Forbidden", "wsgi: internal clients only")
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    seen.update(PATH_INFO=environ.get("PATH_INFO"), REQUEST_METHOD=environ.get("REQUEST_METHOD"))
    return answer("200 OK", json.dumps(seen), "application/json")


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main():
    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

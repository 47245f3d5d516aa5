#!/usr/bin/env python3
"""A stand-in for the platforms' Graph API for deploy/compose/e2e.sh: answers every POST like the
Send API and appends `path body` to the log file given as the second argument."""
import http.server, json, sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(sys.argv[2], "a") as f:
            f.write(f"{self.path} {body.decode()}\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"messaging_product": "whatsapp", "messages": [{"id": "wamid.stub"}]}).encode())

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()

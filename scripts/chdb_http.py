#!/usr/bin/env python3
"""ClickHouse's HTTP interface on top of chDB: a TEST HARNESS for the current ClickHouse engine.

No current ClickHouse server can be installed on the machines this project is built and
tested on (Debian ships 18.16; there is no Docker). `chdb-core` (PyPI) embeds the real
ClickHouse engine (26.9.2.1 in chdb-core 26.9.0) in-process, with no server and no
network port. This program serves the part of ClickHouse's HTTP interface that
clickhouse-go's HTTP protocol uses, so that Venna and its whole test suite run unchanged
against that engine: every statement is parsed, planned and executed by ClickHouse 26.9
itself; this adapter only carries bytes.

It is not a server for users: there is no access control beyond one user/password, no
quotas, no compression, no sessions, no progress headers. Users run a real ClickHouse
server or ClickHouse Cloud, which Venna reaches over the native protocol or over
HTTP(S) (README.md, "ClickHouse versions").

What it serves:
  GET  /ping                      "Ok.\\n"
  GET|POST /?query=...            the query from the URL, the body, or both (an INSERT's
                                  data follows its `FORMAT x` in the body), answered in
                                  default_format (Native for clickhouse-go)
  URL parameters                  database (the default database of the query),
                                  param_<name> (query parameters), every other unknown
                                  parameter is applied as a setting (SET name = value)
  auth                            HTTP Basic, X-ClickHouse-User/-Key or user/password
                                  parameters, checked against the users of --users-xml
                                  (a ClickHouse users.xml: each user's password and the
                                  settings of its profile, e.g. readonly, which the engine
                                  then enforces); without it, one user `default`, no password
  errors                          status 500 (404 unknown table/database, 400 syntax),
                                  X-ClickHouse-Exception-Code and the engine's message

Where it must differ from a server, it says so here:
  * Native results are written by the engine at protocol revision 0 (plain Native, no
    BlockInfo). The first query of every clickhouse-go HTTP connection asks
    `SELECT displayName(), version(), revision(), timezone()` and decodes that one answer
    at the client's revision; the adapter answers it itself, encoded that way, reporting
    revision 0 so that the client reads every later answer as plain Native. version()
    is the engine's own.
  * Results are materialized before the status line is sent, so an error is always a
    non-200 answer (a server may fail mid-stream after a 200).
  * Quotas and networks of users.xml are not enforced; profiles' settings are.
  * compress=1 / decompress=1 (ClickHouse's own block compression) and session_id are
    refused with an error rather than ignored.

Usage:
  chdb_http.py --path DIR --port 8123 [--host 127.0.0.1] [--users-xml users.xml]
               [--tls-cert cert.pem --tls-key key.pem --tls-port 8443]
"""

import argparse
import base64
import contextlib
import hmac
import os
import re
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import traceback
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb

HELLO = "SELECT displayName(), version(), revision(), timezone()"

# URL parameters that are part of the protocol, not settings.
PROTOCOL_PARAMS = {
    "query", "database", "default_format", "client_protocol_version", "query_id", "quota_key",
    "user", "password", "wait_end_of_query", "send_progress_in_http_headers", "buffer_size",
    "enable_http_compression", "http_headers_progress_interval_ms", "max_result_rows_to_send",
}

ERROR_CODE = re.compile(r"Code:\s*(\d+)")
ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*$", re.IGNORECASE | re.DOTALL)
INSERT = re.compile(r"^\s*INSERT\s+INTO\b", re.IGNORECASE)
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class QueryError(Exception):
    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def load_users(path):
    """name -> (password, profile settings) from a ClickHouse users.xml."""
    if not path:
        return {"default": ("", ())}
    root = ET.parse(path).getroot()
    profiles = {}
    for p in root.findall("./profiles/*"):
        profiles[p.tag] = tuple((e.tag, (e.text or "").strip()) for e in p)
    users = {}
    for u in root.findall("./users/*"):
        password = (u.findtext("password") or "").strip()
        users[u.tag] = (password, profiles.get((u.findtext("profile") or "default").strip(), ()))
    return users


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def native_string(s):
    b = s.encode("utf-8")
    return varint(len(b)) + b


def hello_block(display_name, version, tz):
    """The hello answer in Native at a client revision with BlockInfo and custom-serialization flags."""
    out = bytearray(b"\x01\x00\x02\xff\xff\xff\xff\x00")  # BlockInfo: is_overflows=0, bucket_num=-1, end
    out += varint(4) + varint(1)
    for name, typ, data in (
        ("displayName()", "String", native_string(display_name)),
        ("version()", "String", native_string(version)),
        ("revision()", "UInt32", struct.pack("<I", 0)),
        ("timezone()", "String", native_string(tz)),
    ):
        out += native_string(name) + native_string(typ) + b"\x00" + data
    return bytes(out)


class Engine:
    """The chDB engine and a pool of its connections, one per default database and settings.

    A connection's current database and settings are its own, so queries for different
    databases run side by side; a connection serves one query at a time.
    """

    def __init__(self, path, users):
        self.path = path
        self.users = users
        self.lock = threading.Lock()
        self.idle = {}  # (database, settings) -> [connection]
        first = chdb.connect(path)
        row = first.query("SELECT displayName(), version(), timezone()", "TSV").bytes().decode().strip().split("\t")
        self.display_name, self.version, self.timezone = row
        first.close()

    def _put(self, key, conn):
        with self.lock:
            self.idle.setdefault(key, []).append(conn)

    def _get(self, user, database, settings):
        key = (user, database, settings)
        with self.lock:
            pool = self.idle.get(key)
            if pool:
                return key, pool.pop()
        conn = chdb.connect(self.path)
        try:
            if database != "default":
                if not IDENT.match(database):
                    raise QueryError("Code: 81. DB::Exception: Database %s does not exist. (UNKNOWN_DATABASE)" % database, 81, 404)
                run(conn, "USE " + database, "TSV")
            for name, value in self.users[user][1] + settings:  # the profile's, then the request's
                if not IDENT.match(name):
                    raise QueryError("Code: 115. DB::Exception: Unknown setting '%s'. (UNKNOWN_SETTING)" % name, 115, 400)
                run(conn, "SET %s = '%s'" % (name, value.replace("\\", "\\\\").replace("'", "\\'")), "TSV")
        except Exception:
            conn.close()
            raise
        return key, conn

    @contextlib.contextmanager
    def connection(self, user, database, settings):
        """A pooled connection, back to the pool after success, closed after an error (which
        may leave it mid-statement)."""
        key, conn = self._get(user, database, settings)
        try:
            yield conn
        except BaseException:
            try:
                conn.close()
            except Exception:
                pass
            raise
        self._put(key, conn)

    def query(self, user, database, settings, sql, fmt, params):
        with self.connection(user, database, settings) as conn:
            return run(conn, sql, fmt, params)

    def insert(self, user, database, settings, statement, fmt, chunks):
        with self.connection(user, database, settings) as conn:
            try:
                ins = conn.send_insert(statement, fmt)
            except Exception as e:
                raise as_query_error(e)
            try:
                for chunk in chunks:
                    if chunk:
                        ins.append(chunk)
                ins.finish()
            except Exception as e:
                try:
                    ins.cancel()
                except Exception:
                    pass
                raise as_query_error(e)


def as_query_error(e):
    if isinstance(e, QueryError):
        return e
    msg = str(e)
    m = ERROR_CODE.search(msg)
    code = int(m.group(1)) if m else 1000
    if not m:
        msg = "Code: 1000. DB::Exception: %s" % msg
    # Strip the Python-side prefixes chDB adds ("Streaming insert append failed: ").
    i = msg.find("Code:")
    if i > 0:
        msg = msg[i:]
    return QueryError(msg, code)


def run(conn, sql, fmt, params=None):
    try:
        res = conn.query(sql, fmt, params=params) if params else conn.query(sql, fmt)
    except Exception as e:
        raise as_query_error(e)
    if res is None:
        return b""
    if hasattr(res, "has_error") and res.has_error():
        raise as_query_error(Exception(res.error_message()))
    return res.bytes()


def status_for(code):
    if code in (60, 81):  # UNKNOWN_TABLE, UNKNOWN_DATABASE
        return 404
    if code in (62, 47, 46, 115):  # SYNTAX_ERROR, UNKNOWN_IDENTIFIER, UNKNOWN_FUNCTION, UNKNOWN_SETTING
        return 400
    if code == 516:  # AUTHENTICATION_FAILED
        return 401
    return 500


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection, or a client that is not speaking HTTP
    server_version = "chdb-http-harness"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("chdb_http: " + (fmt % args) + "\n")

    # Body --------------------------------------------------------------------------

    def body_chunks(self):
        """Yields the request body in pieces (Content-Length or chunked); body_done says
        whether all of it was read."""
        self.body_done = False
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise QueryError("Code: 33. DB::Exception: Unexpected end of chunked body. (CANNOT_READ_ALL_DATA)", 33, 400)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            self.body_done = True
                            return
                data = self.rfile.read(size)
                self.rfile.readline(3)
                yield data
        else:
            n = int(self.headers.get("Content-Length") or 0)
            while n > 0:
                data = self.rfile.read(min(n, 1 << 20))
                if not data:
                    raise QueryError("Code: 33. DB::Exception: Unexpected end of body. (CANNOT_READ_ALL_DATA)", 33, 400)
                n -= len(data)
                yield data
            self.body_done = True

    # Answers -----------------------------------------------------------------------

    def send(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("X-ClickHouse-Server-Display-Name", self.server.engine.display_name)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        # Head and body in one write: two small writes on a TLS connection wait out the
        # client's delayed ACK (40 ms) before the second goes.
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def fail(self, err):
        if not self.body_done:
            # The rest of the body is still on the connection: it cannot carry another request.
            self.close_connection = True
        code = err.code or 1000
        status = err.status or status_for(code)
        msg = err.message
        if "(version " not in msg:
            msg += " (version %s)" % self.server.engine.version
        self.send(status, (msg + "\n").encode(), [
            ("Content-Type", "text/plain; charset=UTF-8"),
            ("X-ClickHouse-Exception-Code", str(code)),
        ])

    # Requests ----------------------------------------------------------------------

    def do_GET(self):
        self.handle_query()

    def do_POST(self):
        self.handle_query()

    def do_HEAD(self):
        self.handle_query()

    def user(self, params):
        """The authenticated user's name, or None."""
        user, password = params.get("user"), params.get("password")
        if self.headers.get("X-ClickHouse-User"):
            user, password = self.headers.get("X-ClickHouse-User"), self.headers.get("X-ClickHouse-Key", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return False
        user, password = user or "default", password or ""
        known = self.server.engine.users.get(user)
        if known is None or not hmac.compare_digest(password.encode(), known[0].encode()):
            return None
        return user

    def handle_query(self):
        self.body_done = False
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if url.path in ("/ping", "/ping/"):
                self.drain()
                self.send(200, b"Ok.\n", [("Content-Type", "text/plain; charset=UTF-8")])
                return
            if url.path not in ("/", ""):
                self.drain()
                raise QueryError("Code: 1000. DB::Exception: No handler for %s in this test harness." % url.path, 1000, 404)
            user = self.user(params)
            if user is None:
                self.drain()
                raise QueryError("Code: 516. DB::Exception: default: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)", 516, 401)
            for p in ("compress", "decompress"):
                if params.get(p, "0") not in ("", "0"):
                    self.drain()
                    raise QueryError("Code: 1000. DB::Exception: %s=1 (native block compression) is not served by this test harness." % p, 1000, 400)
            if params.get("session_id"):
                self.drain()
                raise QueryError("Code: 1000. DB::Exception: sessions are not served by this test harness.", 1000, 400)
            database = params.get("database") or "default"
            fmt = params.get("default_format") or "TabSeparated"
            query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            settings = tuple(sorted((k, v) for k, v in params.items()
                                    if k not in PROTOCOL_PARAMS and not k.startswith("param_")))
            engine = self.server.engine
            chunks = self.body_chunks()
            sql = params.get("query")
            if sql is None or not INSERT.match(sql):
                # The statement is the URL's query followed by the body, as on a server.
                body = b"".join(chunks).decode("utf-8")
                sql = (sql + "\n" + body) if sql is not None and body else (sql if sql is not None else body)
                if sql.strip() == HELLO:
                    self.send(200, hello_block(engine.display_name, engine.version, engine.timezone),
                              [("Content-Type", "application/octet-stream"), ("X-ClickHouse-Format", "Native")])
                    return
                out = engine.query(user, database, settings, sql, fmt, query_params)
                m = FORMAT_CLAUSE.search(sql)
                if m:
                    fmt = m.group(1)
                self.send(200, out, [("Content-Type", "application/octet-stream" if fmt.startswith(("Native", "RowBinary")) else "text/plain; charset=UTF-8"),
                                     ("X-ClickHouse-Format", fmt)])
                return
            # INSERT ... FORMAT x with the data in the body: streamed into the engine.
            m = FORMAT_CLAUSE.search(sql)
            if m is None:
                body = b"".join(chunks).decode("utf-8")
                out = engine.query(user, database, settings, sql + "\n" + body, fmt, query_params)
                self.send(200, out)
                return
            engine.insert(user, database, settings, sql[:m.start()].strip(), m.group(1), chunks)
            self.send(200, b"")
        except QueryError as e:
            self.fail(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a harness bug: say so, never hang the client
            traceback.print_exc()
            self.fail(QueryError("Code: 1001. DB::Exception: harness error: %r" % e, 1001, 500))

    def drain(self):
        for _ in self.body_chunks():
            pass


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", required=True, help="the engine's data directory (kept between runs)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123, help="plain HTTP port (0: none)")
    ap.add_argument("--tls-port", type=int, default=0, help="HTTPS port (needs --tls-cert and --tls-key)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--users-xml", help="a ClickHouse users.xml: users, passwords, profiles' settings")
    ap.add_argument("--pid-file")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    os.makedirs(args.path, exist_ok=True)
    engine = Engine(args.path, load_users(args.users_xml))
    servers = []
    if args.port:
        servers.append(Server((args.host, args.port), Handler))
    if args.tls_port:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        s = Server((args.host, args.tls_port), Handler)
        s.socket = ctx.wrap_socket(s.socket, server_side=True)
        servers.append(s)
    if not servers:
        ap.error("no port to serve")
    for s in servers:
        s.engine, s.verbose = engine, args.verbose
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(str(os.getpid()))
    sys.stderr.write("chdb_http: ClickHouse %s (chDB) on %s, data in %s\n" % (
        engine.version, ", ".join("%s:%d" % s.server_address for s in servers), args.path))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    stop.wait()
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()

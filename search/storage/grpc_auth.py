"""Who may talk to a storage proxy: loopback unless asked, a shared-secret token, TLS.

Optuna's gRPC storage proxy has no authentication: any client that reaches its port can read,
change and delete every study. ``strategy-search storage-proxy`` therefore

* listens on a loopback address unless ``--allow-remote`` is given (and then needs a token);
* checks a shared secret on every call when one is set: the proxy reads it from ``--token-file``,
  ``$STRATEGY_SEARCH_PROXY_TOKEN`` or ``$STRATEGY_SEARCH_PROXY_TOKEN_FILE`` (never from its command
  line, which other users of the machine can read in ``ps``); workers send it from the same
  variables as gRPC metadata (``authorization: Bearer ...``), and a call without it, or with
  another, is refused with ``UNAUTHENTICATED``;
* serves TLS from ``--tls-cert``/``--tls-key`` (gRPC's own server credentials); workers trust the
  certificate (or its CA) named by ``$STRATEGY_SEARCH_PROXY_CA``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

from optuna.storages import GrpcStorageProxy

from search.core.errors import StorageError

TOKEN_ENV = "STRATEGY_SEARCH_PROXY_TOKEN"
TOKEN_FILE_ENV = "STRATEGY_SEARCH_PROXY_TOKEN_FILE"
CA_ENV = "STRATEGY_SEARCH_PROXY_CA"
METADATA_KEY = "authorization"
MIN_TOKEN_LENGTH = 16
TOKEN_HINT = "e.g. `openssl rand -hex 32 > proxy.token`"


def _read_file(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise StorageError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None


def read_token(token_file: str | Path | None = None) -> str | None:
    """The shared secret: ``token_file``, else $STRATEGY_SEARCH_PROXY_TOKEN, else the file named by
    $STRATEGY_SEARCH_PROXY_TOKEN_FILE; None when none is set."""
    if token_file is not None:
        text, where = _read_file(token_file, "--token-file").decode("utf-8", "replace"), f"--token-file {token_file}"
    elif os.environ.get(TOKEN_ENV):
        text, where = os.environ[TOKEN_ENV], f"${TOKEN_ENV}"
    elif os.environ.get(TOKEN_FILE_ENV):
        path = os.environ[TOKEN_FILE_ENV]
        text, where = _read_file(path, f"${TOKEN_FILE_ENV}").decode("utf-8", "replace"), f"${TOKEN_FILE_ENV} ({path})"
    else:
        return None
    token = text.strip()
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() or not c.isprintable() for c in token):
        raise StorageError(f"the storage-proxy token from {where} must be at least {MIN_TOKEN_LENGTH} printable "
                           f"characters without spaces ({TOKEN_HINT})")
    return token


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_listen(host: str, allow_remote: bool, token: str | None) -> None:
    """Refuse a proxy reachable from other machines unless asked for, and then only with a token."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise StorageError(f"storage-proxy --host {host} is not a loopback address: any machine that reaches it "
                           "could read, change and delete your studies; add --allow-remote (with a token: "
                           f"--token-file or ${TOKEN_ENV}), or listen on 127.0.0.1")
    if token is None:
        raise StorageError(f"storage-proxy --allow-remote needs a shared-secret token (--token-file FILE or "
                           f"${TOKEN_ENV}; {TOKEN_HINT}); workers send it from ${TOKEN_ENV}")


def quiet_grpc() -> None:
    """Keep gRPC's C core from logging its own lines on stderr (a refused bind is our one-line error);
    ``GRPC_VERBOSITY`` set by the user wins. Read when gRPC starts, so call it before the first use."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_interceptor(token: str) -> Any:
    """A server interceptor refusing every call that does not carry ``token`` (UNAUTHENTICATED)."""
    import grpc

    expected = _digest(token)

    def deny(request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED,
                      "storage-proxy: missing or wrong token (set STRATEGY_SEARCH_PROXY_TOKEN to the proxy's token)")

    refused = grpc.unary_unary_rpc_method_handler(deny)

    class TokenCheck(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
            given = dict(details.invocation_metadata or ()).get(METADATA_KEY, "")
            value = given[len("Bearer "):] if isinstance(given, str) and given.startswith("Bearer ") else ""
            if value and hmac.compare_digest(_digest(value), expected):
                return continuation(details)
            return refused

    return TokenCheck()


def server_credentials(cert: str | Path, key: str | Path) -> Any:
    """gRPC server credentials from PEM certificate and key files."""
    import grpc

    return grpc.ssl_server_credentials([(_read_file(key, "--tls-key"), _read_file(cert, "--tls-cert"))])


def make_server(storage: Any, host: str, port: int, thread_pool: Any, *, token: str | None = None,
                tls: tuple[str | Path, str | Path] | None = None) -> Any:
    """Optuna's storage service on a gRPC server that checks ``token`` and serves TLS with ``tls`` (cert,
    key). The port is bound exclusively: a second proxy on a port in use fails here (gRPC otherwise sets
    SO_REUSEPORT, and two proxies would split the workers between two databases)."""
    quiet_grpc()
    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    server = grpc.server(thread_pool, interceptors=[token_interceptor(token)] if token else None,
                         options=[("grpc.so_reuseport", 0)])
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, server_credentials(*tls)) if tls is not None
                 else server.add_insecure_port(address))
    except RuntimeError:  # (grpcio >= 1.52; older ones return 0)
        bound = 0
    if not bound:
        raise StorageError(f"storage-proxy: cannot listen on {host}:{port}: the port is in use (another proxy?), "
                           "or the address is not this machine's")
    return server


class _Metadata:
    """Adds the token to every call of a channel (gRPC client interceptor)."""

    def __init__(self, token: str) -> None:
        import grpc

        class Interceptor(grpc.UnaryUnaryClientInterceptor):
            def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
                metadata = list(details.metadata or []) + [(METADATA_KEY, f"Bearer {token}")]
                return continuation(details._replace(metadata=metadata), request)

        self.interceptor = Interceptor()


def client_channel(host: str, port: int, token: str | None, ca: bytes | None) -> Any:
    """A channel to the proxy: TLS when ``ca`` (PEM) is given, the token on every call when set."""
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = [("grpc.max_receive_message_length", -1)]
    channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca), options=options)
               if ca is not None else grpc.insecure_channel(target, options=options))
    if token is not None:
        channel = grpc.intercept_channel(channel, _Metadata(token).interceptor)
    return channel


class AuthenticatedProxy(GrpcStorageProxy):
    """Optuna's proxy client on a channel that carries the token and speaks TLS when asked."""

    def __init__(self, *, host: str, port: int, token: str | None = None, ca: bytes | None = None) -> None:
        self._token, self._ca = token, ca
        super().__init__(host=host, port=port)

    def _setup(self) -> None:  # Optuna's own builds an insecure channel without metadata
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.client import GrpcClientCache

        self._channel = client_channel(self._host, self._port, self._token, self._ca)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)

    def wait_server_ready(self, timeout: float | None = None) -> None:
        import grpc

        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise ConnectionError("gRPC connection timeout") from exc


def proxy_client(host: str, port: int) -> AuthenticatedProxy:
    """A client of the proxy with this worker's token and TLS settings (from the environment)."""
    ca = _read_file(os.environ[CA_ENV], f"${CA_ENV}") if os.environ.get(CA_ENV) else None
    return AuthenticatedProxy(host=host, port=port, token=read_token(), ca=ca)


def check_access(client: Any, url: str) -> None:
    """One cheap call: a refused token is a one-line error now, not a traceback at the first trial."""
    import grpc

    try:
        # A name no study has (the lookup's answer is "not found"; databases refuse NUL bytes in names).
        client.get_study_id_from_name(f"strategy-search access check {uuid.uuid4().hex}")
    except KeyError:
        return  # answered: the proxy let us in
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            given = "a wrong token" if read_token() is not None else "no token"
            raise StorageError(f"storage {url}: the proxy refused this worker ({given}); set ${TOKEN_ENV} (or "
                               f"${TOKEN_FILE_ENV}) to the proxy's token") from None
        raise StorageError(f"storage {url}: the proxy did not answer ({code.name if code else exc})") from None

"""The terminal's TLS context for the broker link: the site CA to verify, its own client certificate.

Owns turning the config's `mqtt.tls` (docs/config.md: DER certificates and key, hex) into
an `ssl.SSLContext` that requires the broker's certificate to chain to the site's CA and
to name the host the terminal dialled (`server_hostname`), and that presents the
terminal's own client certificate (its broker login: mosquitto takes the certificate's
common name as the user name). Runtime-neutral:

- MicroPython (mbedTLS): `load_verify_locations(cadata=DER)` and
  `load_cert_chain(cert DER, key DER)` take the bytes directly; the unix port's mbedTLS
  has no PEM parser, DER works on every port. `verify_mode` must be set: a MicroPython
  client context does not verify by default.
- CPython: `load_cert_chain` reads files only, so the certificate and key go, as PEM, to
  a private temporary folder (mode 0700, files 0600) that is removed at once.

Nothing here logs a secret.
"""
import ssl
from binascii import unhexlify

_MPY = not hasattr(ssl, "create_default_context")


class TlsConfigError(ValueError):
    pass


def _der(text, what):
    try:
        b = unhexlify(text)
    except Exception:
        raise TlsConfigError("mqtt.tls.%s must be hex (DER)" % what)
    if len(b) < 32 or b[0] != 0x30:
        raise TlsConfigError("mqtt.tls.%s is not a DER object" % what)
    return b


def context(tls):
    """An SSLContext from the config's `mqtt.tls` dict {"ca", "cert", "key"} (hex DER)."""
    ca = _der(tls["ca"], "ca")
    cert = tls.get("cert")
    key = tls.get("key")
    if _MPY:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=ca)
        if cert is not None:
            ctx.load_cert_chain(_der(cert, "cert"), _der(key, "key"))
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca)
    if cert is not None:
        _load_chain_cpython(ctx, _der(cert, "cert"), _der(key, "key"))
    return ctx


def _pem(der, label):
    import base64

    b = base64.b64encode(der).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


def _load_chain_cpython(ctx, cert, key):
    import os
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="cpos-tls-")  # mode 0700
    try:
        path = os.path.join(d, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_pem(cert, "CERTIFICATE") + _pem(key, "PRIVATE KEY"))
        ctx.load_cert_chain(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)

"""The site's certificates: its CA, the broker's server certificate, each terminal's client certificate.

Owns every X.509 object a site uses for MQTT over TLS (docs/security.md): made with the
`cryptography` package (no hand-rolled crypto), ECDSA P-256 keys (a handshake an ESP32's
mbedTLS does in well under a second, and small certificates: docs/heap.md), PEM files.

- `make_ca(dir)`: `ca.key` (mode 0600: whoever holds it can mint terminals) and `ca.crt`.
- `make_broker(dir, names)`: `broker.key` (0600) and `broker.crt` for the names and
  addresses terminals use to reach the broker (subjectAltName; terminals check it).
- `make_client(dir, cn)`: a client certificate whose common name is the terminal id
  (mosquitto `use_identity_as_username`: the certificate *is* the broker login); returns
  (cert PEM, key PEM) for the terminal's config.json and keeps no copy of the key.

Every private key file is created with mode 0600 before a byte is written.
"""
import datetime
import ipaddress
import os

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
BROKER_KEY = "broker.key"
BROKER_CERT = "broker.crt"
_YEARS = 20  # a site's CA outlives its terminals; client and broker certificates are re-made on rotation


def _x509():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    return x509, hashes, serialization, ec, NameOID, ExtendedKeyUsageOID


def _key_pem(key):
    _, _, serialization, _, _, _ = _x509()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert):
    _, _, serialization, _, _, _ = _x509()
    return cert.public_bytes(serialization.Encoding.PEM)


def write_secret(path, data, exclusive=True):
    """Write `data` (bytes or text) to a new file created mode 0600 (never readable by others)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def _write_public(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _name(cn, org):
    x509, _, _, _, NameOID, _ = _x509()
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now():
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)


def make_ca(site_dir, site):
    """A new CA for `site` in `site_dir` (ca.key 0600, ca.crt); refuses to replace one."""
    x509, hashes, _, ec, _, _ = _x509()
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("CPOS site %s CA" % site, "CPOS " + site)
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365 * _YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_secret(os.path.join(site_dir, CA_KEY), _key_pem(key))
    _write_public(os.path.join(site_dir, CA_CERT), _cert_pem(cert))
    return cert


def _load_ca(site_dir):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(os.path.join(site_dir, CA_KEY), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    with open(os.path.join(site_dir, CA_CERT), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return key, cert


def _issue(site_dir, cn, org, days, server_names=None):
    x509, hashes, _, ec, _, EKU = _x509()
    ca_key, ca_cert = _load_ca(site_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    b = (x509.CertificateBuilder().subject_name(_name(cn, org)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if server_names is not None:
        alt = []
        for n in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([EKU.CLIENT_AUTH]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def make_broker(site_dir, site, names, exclusive=True):
    """broker.crt and broker.key (0600) for the broker's host names / addresses `names`
    (the first is the common name); signed by the site's CA."""
    names = list(names)
    if not names:
        raise ValueError("the broker certificate needs at least one name")
    cert, key = _issue(site_dir, names[0], "CPOS " + site, 365 * 5, server_names=names)
    write_secret(os.path.join(site_dir, BROKER_KEY), key, exclusive)
    _write_public(os.path.join(site_dir, BROKER_CERT), cert)
    return cert


def make_client(site_dir, site, cn, days=365 * 10):
    """(cert PEM, key PEM) of a client certificate for login `cn` (a terminal id or the
    backend), signed by the site's CA. The key is returned, not stored: it goes into the
    terminal's config.json only."""
    return _issue(site_dir, cn, "CPOS " + site, days)


def ca_pem(site_dir):
    with open(os.path.join(site_dir, CA_CERT), "rb") as f:
        return f.read()


def der(cert_pem):
    """The DER bytes of a PEM certificate (what a terminal's config.json carries, in hex:
    MicroPython's mbedTLS reads DER on every port)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def der_key(key_pem):
    """The DER (PKCS#8) bytes of a PEM private key."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def serial_and_cn(cert_pem):
    """(serial, common name) of a PEM certificate: what the site folder records of a terminal's login."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    c = x509.load_pem_x509_certificate(cert_pem if isinstance(cert_pem, bytes) else cert_pem.encode())
    return c.serial_number, c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


CRL = "crl.pem"


def write_crl(site_dir, revoked_serials):
    """The site's certificate revocation list (mosquitto `crlfile`): every serial given."""
    x509, hashes, _, _, _, _ = _x509()
    from cryptography.hazmat.primitives import serialization

    ca_key, ca_cert = _load_ca(site_dir)
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
         .next_update(now + datetime.timedelta(days=365 * _YEARS)))
    for serial in sorted(set(revoked_serials)):
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                      .revocation_date(now).build())
    crl = b.sign(ca_key, hashes.SHA256())
    path = os.path.join(site_dir, CRL)
    tmp = path + ".new"
    _write_public(tmp, crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)

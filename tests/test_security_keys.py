"""Per-terminal keys and their rotation (issue 14 points 2 and 6), on the backend's side.

- `derive` is HKDF-Expand (RFC 5869) as the `cryptography` package computes it;
- a terminal's keys are its own: another terminal's, or the site master's, sign nothing
  for it;
- rotating a terminal's keys (a new generation) and the site's master loses and doubles
  no pending purchase: the batch signed with the old keys before the terminal got its new
  config is booked, the same records re-sent under the new keys are not booked twice,
  and the old keys are refused once the new ones were used.
"""
import os
import subprocess
import sys

import pytest

from cpos.net import messages as protocol
from cpos.net import signing
from backend import Ledger
from backend import site_keys as sk

SITE = "skole-nord"


def test_derive_is_hkdf_expand():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    master = bytes(range(32))
    for purpose, tid, gen in (("down", "t0001", 0), ("up", "t0001", 0), ("up", "t0002", 3)):
        info = ("cpos/v1 %s %s %d" % (purpose, tid, gen)).encode()
        want = HKDFExpand(hashes.SHA256(), 32, info).derive(master)
        assert signing.derive(master, purpose, tid, gen) == want
    keys = {signing.derive(master, p, t, g) for p in ("down", "up") for t in ("t0001", "t0002") for g in (0, 1)}
    assert len(keys) == 8


def batch(tid, lo, hi, recs, key):
    topic = protocol.topic(SITE, tid, protocol.BATCH).encode()
    return topic, signing.seal_json(signing.Key(key), topic, protocol.encode_batch(lo, hi, recs))


def rec(seq, amount=500):
    return {"seq": seq, "t": 1764068400 + seq, "account": 1, "amount": amount, "place": 0, "kind": 0,
            "terminal": 7, "balance_after": 0, "reason": 0, "uid": "04a1b2c3d4e5f6", "item": "x", "topup": False}


def test_rotation_of_a_terminal_and_of_the_master_loses_and_doubles_nothing(tmp_path):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    m1 = bytes(range(32))
    (site_dir / "site_key").write_text(m1.hex() + "\n")
    led = Ledger(str(tmp_path / "l.db"), clock=lambda: 1764068400 + 3600)  # the records' hour (backend.trust)
    led.add_account("Ada", 100000, account_id=1)
    led.add_card("04a1b2c3d4e5f6", "884263sae", 1)
    led.add_terminal(7, SITE, 0, 0)
    sk.ensure_schema(led.db)
    tid = "t0007"
    with led._tx():
        g1 = sk.rotate(led.db, 7, m1)  # first provisioning: generation 1
    keys = sk.SiteKeys({SITE: [m1]}, led.db)

    def book(topic, payload):
        body = keys.check_uplink(SITE, tid, topic, payload)
        return led.apply_batch(SITE, tid, body)

    up1 = signing.derive(m1, "up", tid, g1)
    assert book(*batch(tid, 1, 1, [rec(1)], up1)).watermark == 1
    # others' keys and the master itself sign nothing for t0007
    for wrong in (signing.derive(m1, "up", "t0008", g1), m1, signing.derive(m1, "down", tid, g1),
                  signing.derive(m1, "up", tid, 0)):
        with pytest.raises(signing.DownlinkError):
            book(*batch(tid, 2, 2, [rec(2)], wrong))
    # The master rotates (backend action), the terminal is re-provisioned: generation 2 under m2.
    p = subprocess.run([sys.executable, "-m", "backend", "rotate-master", "--ledger", str(tmp_path / "l.db"),
                        "--site-dir", str(site_dir)], capture_output=True, text=True)
    assert p.returncode == 0 and "new master made" in p.stdout, p.stderr
    assert oct(os.stat(site_dir / "site_key").st_mode & 0o777) == "0o600"
    m2 = bytes.fromhex((site_dir / "site_key").read_text().strip())
    assert bytes.fromhex((site_dir / "site_key.previous").read_text().strip()) == m1 and m2 != m1
    keys = sk.SiteKeys({SITE: [m2, m1]}, led.db)  # the restarted backend: both masters
    # before re-provisioning, the terminal still works on its old keys (record 2 pending)
    assert book(*batch(tid, 2, 2, [rec(2)], up1)).watermark == 2
    with led._tx():
        g2 = sk.rotate(led.db, 7, m2)
    up2 = signing.derive(m2, "up", tid, g2)
    # record 3 was signed with the old keys before the new config.json reached the device: booked
    assert book(*batch(tid, 3, 3, [rec(3)], up1)).watermark == 3
    # the device now has its new keys and re-sends 3 (its ack was lost) with 4: 3 is not doubled
    assert book(*batch(tid, 3, 4, [rec(3), rec(4)], up2)).watermark == 4
    assert led.purchase_seqs(7) == [1, 2, 3, 4]
    # the old keys died when the new ones were first used
    with pytest.raises(signing.DownlinkError):
        book(*batch(tid, 5, 5, [rec(5)], up1))
    # the downlink is signed with the new key
    assert keys.down(SITE, tid).tag(b"t", b"m") == signing.Key(signing.derive(m2, "down", tid, g2)).tag(b"t", b"m")
    # finishing the master rotation: allowed now that no terminal holds m1's keys
    p = subprocess.run([sys.executable, "-m", "backend", "rotate-master", "--ledger", str(tmp_path / "l.db"),
                        "--site-dir", str(site_dir)], capture_output=True, text=True)
    assert p.returncode == 0 and "finished" in p.stdout and not (site_dir / "site_key.previous").exists(), p.stderr
    led.close()


def test_the_backend_refuses_secrets_on_its_command_line(tmp_path):
    for argv in (["serve", "--ledger", "x.db", "--password", "hunter2"],
                 ["serve", "--ledger", "x.db", "--site-key=skole-nord=" + "00" * 32]):
        p = subprocess.run([sys.executable, "-m", "backend"] + argv, capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode == 2 and "no longer taken on the command line" in p.stderr, p.stderr
    loose = tmp_path / "pw"
    loose.write_text("hunter2\n")
    os.chmod(loose, 0o644)
    p = subprocess.run([sys.executable, "-m", "backend", "serve", "--ledger", "x.db", "--password-file", str(loose)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "readable by other users" in p.stderr, p.stderr


def test_site_init_makes_the_pki_and_every_secret_file_owner_only(tmp_path):
    from host_tools import site as sites

    site_dir = tmp_path / "site"
    sites.init(str(site_dir), str(tmp_path / "l.db"), say=lambda m: None, site="skole-nord",
               broker_names=["broker.skole-nord.local", "127.0.0.1"])
    for secret in ("site_key", "ca.key", "broker.key", "backend.password", "passwd", "acl"):
        assert oct(os.stat(site_dir / secret).st_mode & 0o777) == "0o600", secret
    conf = (site_dir / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "crlfile %s" % (site_dir / "crl.pem") in conf
    # the broker's certificate carries the names given, signed by the site CA
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((site_dir / "broker.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.skole-nord.local" in names.get_values_for_type(x509.DNSName)
    ca = x509.load_pem_x509_certificate((site_dir / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)

"""Configuration validation (cpos.config): good configs load, bad ones name the field."""
from cpos import config, rules

GOOD = {
    "terminal_id": "t0001", "terminal_no": 1, "site": "skole-nord",
    "place": "school", "kind": "till",
    "pn532": {"link": "tcp", "host": "127.0.0.1", "port": 7001},
    "pos": {"link": "tcp", "host": "127.0.0.1", "port": 7101},
    "storage": {"journal": {"file": "j.bin", "size": 65536},
                "cardtable": {"partition": "cards"}},
}


def variant(**changes):
    d = dict(GOOD)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def error_of(d):
    try:
        config.validate(d)
    except config.ConfigError as e:
        return str(e)
    raise AssertionError("accepted: %r" % (d,))


def test_good_config_loads_with_defaults():
    c = config.validate(GOOD)
    assert c.terminal_id == "t0001" and c.site == "skole-nord"
    assert c.place == rules.PLACE_SCHOOL and c.kind == rules.TILL
    assert c.topup_threshold == 5000 and c.removal_window_ms == 500
    assert c.profile.kind == rules.TILL
    c = config.validate(variant(place="club", kind="vending", topup_threshold_ore=2000))
    assert c.profile.place == rules.PLACE_CLUB and c.profile.kind == rules.VENDING
    assert c.profile.topup_threshold == 2000


def test_errors_name_the_field():
    cases = (
        (variant(terminal_id=None), "terminal_id: is missing"),
        (variant(terminal_id="t 1/x"), "terminal_id: may hold only"),
        (variant(terminal_no=0), "terminal_no: must be between"),
        (variant(terminal_no="7"), "terminal_no: must be a whole number"),
        (variant(place="canteen"), "place: must be one of club/school"),
        (variant(kind="atm"), "kind: must be one of till/vending"),
        (variant(pn532={"link": "usb"}), "pn532.link: must be one of"),
        (variant(pn532={"link": "tcp", "host": "x"}), "pn532.port: is missing"),
        (variant(storage={"journal": {"file": "j", "size": 5000}, "cardtable": {"partition": "c"}}),
         "storage.journal.size"),
        (variant(storage={"journal": {}, "cardtable": {"partition": "c"}}), "storage.journal: needs either"),
        (variant(topup_threshold_ore=-1), "topup_threshold_ore"),
        (variant(colour="red"), "colour: is not a known setting"),
    )
    for d, want in cases:
        got = error_of(d)
        assert want in got, "%r not in %r" % (want, got)
    assert "must be a JSON object" in error_of([1, 2])


def test_load_reports_unreadable_and_bad_json():
    try:
        config.load("/nonexistent/config.json")
    except config.ConfigError as e:
        assert "cannot read" in str(e)
    else:
        raise AssertionError("loaded a missing file")
    import os

    path = (os.getenv("CPOS_TMP") or "/tmp") + "/cpos_bad_config.json"
    with open(path, "w") as f:
        f.write("{not json")
    try:
        config.load(path)
    except config.ConfigError as e:
        assert "not valid JSON" in str(e)
    else:
        raise AssertionError("loaded bad JSON")


def test_hardware_links_take_whole_number_settings():
    c = config.validate(variant(pn532={"link": "i2c", "i2c": 0, "scl": 22, "sda": 21, "reset": 4}))
    assert c.pn532["scl"] == 22
    assert "pn532.scl" in error_of(variant(pn532={"link": "i2c", "scl": "22"}))
    assert "pn532.baud" in error_of(variant(pn532={"link": "uart", "baud": 300}))


MQTT = {"host": "127.0.0.1", "port": 1883, "password": "s3cret"}


def test_mqtt_section_gets_defaults_and_the_terminal_user():
    c = config.validate(variant(mqtt=dict(MQTT)))
    m = c.mqtt
    assert (m["host"], m["port"], m["user"], m["password"]) == ("127.0.0.1", 1883, "t0001", "s3cret")
    assert (m["keepalive"], m["batch"], m["ack_timeout_ms"], m["window"]) == (30, 50, 15000, 4)
    assert config.validate(GOOD).mqtt is None


def test_bad_mqtt_settings_name_the_field():
    def bad(**kw):
        m = dict(MQTT)
        for k, v in kw.items():
            if v is None:
                m.pop(k)
            else:
                m[k] = v
        return error_of(variant(mqtt=m))

    assert bad(password=None).startswith("config mqtt.password: is missing")
    assert bad(port=0).startswith("config mqtt.port: must be between 1 and 65535")
    assert bad(batch=101).startswith("config mqtt.batch:")
    assert bad(user="t0002").startswith("config mqtt.user: must be the terminal id 't0001'")
    assert bad(qos=2).startswith("config mqtt.qos: is not a known setting")
    assert bad(keepalive="30").startswith("config mqtt.keepalive: must be a whole number")
    # topic levels and the broker ACL need the canonical id and a topic-safe site
    assert error_of(variant(terminal_id="till-1", mqtt=dict(MQTT))).startswith("config terminal_id: must be 't0001'")
    assert error_of(variant(site="Skole_Nord", mqtt=dict(MQTT))).startswith("config site: must be 1-32 of a-z")


def test_wifi_section():
    assert config.validate(variant(wifi={"ssid": "kantine", "password": "x"})).wifi["ssid"] == "kantine"
    assert error_of(variant(wifi={"password": "x"})).startswith("config wifi.ssid: is missing")
    assert error_of(variant(wifi={"ssid": "k", "psk": "x"})).startswith("config wifi.psk: is not a known")


def test_keys_are_the_terminals_own_and_the_shared_site_key_is_refused():
    assert config.validate(GOOD).site_key is None and config.validate(GOOD).up_key is None
    down = "00112233445566778899aabbccddeeff" * 2
    up = "ffeeddccbbaa99887766554433221100" * 2
    c = config.validate(variant(keys={"down": down, "up": up}))
    assert c.site_key == bytes(range(0, 256, 17))[:16] * 2 and c.up_key == bytes(range(255, -1, -17))[:16] * 2
    for bad in ("0011", down + "00", "zz" * 32, 1234, None):
        assert error_of(variant(keys={"down": bad, "up": up})).startswith("config keys.down: must be 64 hex"), bad
        assert error_of(variant(keys={"down": down, "up": bad})).startswith("config keys.up: must be 64 hex"), bad
    assert error_of(variant(keys={"down": down, "up": up, "site": down})).startswith("config keys.site: is not")
    # the old shared key let one terminal forge for all: a config holding it is refused
    assert error_of(variant(site_key=down)).startswith("config site_key: is the old shared site key")


def test_mqtt_tls_section():
    der = "30" + "82" * 40
    tls = {"ca": der, "cert": der, "key": der}
    m = {"host": "broker.skole-nord.local"}
    c = config.validate(variant(mqtt=dict(m, tls=tls)))
    assert c.mqtt["port"] == 8883 and c.mqtt["password"] is None and c.mqtt["tls"]["ca"] == der
    assert error_of(variant(mqtt=dict(m, tls={"ca": der}))).startswith("config mqtt.password: is missing")
    assert error_of(variant(mqtt=dict(m, tls={"ca": der, "cert": der}))).startswith("config mqtt.tls: needs both")
    assert error_of(variant(mqtt=dict(m, tls={"ca": "zz" * 40}))).startswith("config mqtt.tls.ca: must be a DER")
    assert error_of(variant(mqtt=dict(m, tls=dict(tls, pin="x")))).startswith("config mqtt.tls.pin: is not")


def test_offline_policy_settings():
    assert config.validate(GOOD).offline is None  # absent: no offline cap
    c = config.validate(variant(offline={"threshold_s": 600, "allowance_ore": 4000}))
    assert (c.offline.threshold_s, c.offline.allowance_ore) == (600, 4000)
    assert error_of(variant(offline={"threshold_s": 600})) == "config offline.allowance_ore: is missing"
    assert error_of(variant(offline={"threshold_s": -1, "allowance_ore": 1})).startswith(
        "config offline.threshold_s: must be between 0 and")
    assert error_of(variant(offline={"threshold_s": 1, "allowance_ore": 1, "x": 2})).startswith(
        "config offline.x: is not a known setting")
    assert error_of(variant(offline=5)) == "config offline: must be an object {...}"

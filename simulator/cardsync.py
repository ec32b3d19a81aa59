"""Put a scenario's cards and accounts into a terminal's card table, as a sync would.

Owns the translation from scenario data to the card table's snapshot format
(cpos.cards.layout) and installing it through the table's own chunked install path, the
same one the downlink uses. Until the MQTT downlink exists, the simulator provisions
every terminal's table this way before it boots.
"""
from cpos.cards import layout
from cpos.cards import table as cardtable

CHUNK = 4096


def snapshot(scenario, version=1, included_seq=0):
    accounts = {}
    for acc, a in scenario.accounts.items():
        accounts[acc] = (a["balance"], a["places"], list(a["limits"]), a["topup_kr"] > 0, a["topup_kr"],
                         (0, 0, 0), [0] * 6)
    cards = [(c["uid"], c["account"], c["status"]) for c in scenario.cards]
    return layout.build_image(cards, accounts, version, included_seq)


def install(dev, image, version=1, included_seq=0):
    table = cardtable.CardTable(dev)
    table.mount()
    n = (len(image) + CHUNK - 1) // CHUNK
    if table.install_begin(version, included_seq, n) != cardtable.INSTALL_OK:
        raise RuntimeError("card table refused the install")
    for i in range(n):
        st = table.install_chunk(i, bytes(image[i * CHUNK:(i + 1) * CHUNK]))
        if st != cardtable.INSTALL_OK:
            raise RuntimeError("card table refused chunk %d: %d" % (i, st))
    if table.install_commit() != cardtable.INSTALL_OK:
        raise RuntimeError("card table refused the snapshot")
    return table


def install_scenario(dev, scenario, version=1, included_seq=0):
    return install(dev, snapshot(scenario, version, included_seq), version, included_seq)

"""The terminal's network side: the MQTT client, the uplink, the downlink sync.

    mqtt.py          MQTT 3.1.1 client on asyncio streams
    messages.py      topics and JSON payloads both ends agree on (batches, acks, sync
                     requests, health)
    signing.py       the signed envelope of every backend message (HMAC-SHA256 tag)
    uplink.py        journal records up in batches, released on the backend's ack
    journal_feed.py  the journal as the uplink sees it (records, watermarks)
    sync.py          the downlink: deltas and snapshots into the card table

Protocol: docs/protocol.md. Everything here runs in its own asyncio task, never on
the tap path. Nothing is imported here.
"""

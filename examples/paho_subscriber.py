"""Print the stock a DistillSync subscriber applies: python paho_subscriber.py HOST PORT TENANT"""
import json
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, tenant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
topic = f"distillsync/{tenant}/+/out/stock/#"
seen_ids: set[str] = set()  # kept in memory for the example: a real subscriber stores both,
last: dict[tuple[str, str, str], str] = {}  # in the same transaction as what it applies


def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
    event = json.loads(msg.payload)
    key = (event["source"], event["type"].split(".")[1], event["subject"])
    if event["id"] not in seen_ids and event["sequence"] > last.get(key, ""):
        data = event["data"]  # 1. apply (absolute state: a delete has no on_hand)
        print(event["source"], data["sku"], data["warehouse"], data.get("on_hand", "deleted"),
              flush=True)
        seen_ids.add(event["id"])  # 2. record
        last[key] = event["sequence"]
    client.ack(msg.mid, msg.qos)  # 3. acknowledge, applied or dropped as duplicate/stale


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stock-printer-{tenant}",
                     protocol=mqtt.MQTTv5, manual_ack=True)
client.on_message = on_message
client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
client.on_subscribe = lambda *_: print("subscribed to", topic, flush=True)
session = Properties(PacketTypes.CONNECT)
session.SessionExpiryInterval = 86400  # the broker keeps our queue for a day while we are away
client.connect(host, port, clean_start=False, properties=session)
client.loop_forever()

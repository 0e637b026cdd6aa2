"""Two paho-mqtt 1.x MQTT 5 clients (a widely deployed client that is not ours) subscribe to one
topic with No Local; A publishes at QoS 0, 1 and 2. Prints what each received as JSON: B must get
all three (the QoS 2 one needs a PUBREL paho 1.x can read), A none."""
import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

host, port = sys.argv[1], int(sys.argv[2])
got = {"a": [], "b": []}
clients = {}
for name in ("a", "b"):
    c = mqtt.Client(client_id="paho-v5-" + name, protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m, name=name: got[name].append([m.topic, m.qos])
    c.connect(host, port, keepalive=60)
    c.loop_start()
    clients[name] = c
time.sleep(0.5)
for c in clients.values():
    c.subscribe("paho/no-local", options=SubscribeOptions(qos=2, noLocal=True))
time.sleep(0.5)
for qos in (0, 1, 2):
    clients["a"].publish("paho/no-local", b"x", qos=qos)
deadline = time.time() + 10
while len(got["b"]) < 3 and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.3)
print(json.dumps(got))

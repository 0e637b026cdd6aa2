"""paho-mqtt 1.x clients (not ours) over WebSocket, MQTT 3.1.1 and 5.0: a subscriber and a
publisher on ws://host:port/mqtt (wss:// with a third argument `tls`; paho offers the "mqtt"
subprotocol); a payload larger than one WebSocket frame of paho's, retained and live messages at
QoS 0, 1 and 2. Prints what each subscriber received as JSON."""
import json
import ssl
import sys
import time

import paho.mqtt.client as mqtt

host, port = sys.argv[1], int(sys.argv[2])
tls = len(sys.argv) > 3 and sys.argv[3] == "tls"


def websocket_client(client_id, protocol):
    c = mqtt.Client(client_id=client_id, protocol=protocol, transport="websockets")
    c.ws_set_options(path="/mqtt")
    if tls:
        # The test's self-signed certificate.
        c.tls_set(cert_reqs=ssl.CERT_NONE)
        c.tls_insecure_set(True)
    return c


got = {"v3": [], "v5": []}
subs = {}
for name, protocol in (("v3", mqtt.MQTTv311), ("v5", mqtt.MQTTv5)):
    c = websocket_client("ws-sub-" + name, protocol)
    c.on_message = lambda _c, _u, m, name=name: got[name].append(
        [m.topic, m.qos, len(m.payload), m.retain])
    c.connect(host, port, keepalive=60)
    c.loop_start()
    subs[name] = c
p = websocket_client("ws-pub", mqtt.MQTTv5)
p.connect(host, port, keepalive=60)
p.loop_start()
time.sleep(0.5)
p.publish("ws/retained", b"r", qos=1, retain=True).wait_for_publish(5)
for c in subs.values():
    c.subscribe("ws/#", qos=2)
time.sleep(0.5)
for qos in (0, 1, 2):
    p.publish("ws/live", b"x" * 70000, qos=qos).wait_for_publish(5)
deadline = time.time() + 10
while min(len(v) for v in got.values()) < 4 and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.3)
print(json.dumps(got))

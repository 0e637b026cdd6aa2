"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, against ironhub.

Usage: linkkit_device.py HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET

Connects over plain MQTT 3.1.1 (the SDK signs with hmacsha1 and adds its own unsigned client-id
parameters), posts a property through the thing model and waits for the Alink reply, then publishes
on a custom topic it subscribed to and waits for its own message. Prints one JSON line with what it
saw; exits non-zero if any step failed or timed out.
"""

import json
import os
import sys
import tempfile
import threading

from linkkit import linkkit

WAIT_S = 10


def main():
    host, port, pk, dn, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    tsl = {
        "properties": [{"identifier": "temperature", "dataType": {"type": "float"}}],
        "events": [{"identifier": "post", "outputData": [{"identifier": "temperature"}]}],
        "services": [{"identifier": "set", "inputData": [{"identifier": "temperature"}]}],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(tsl, f)
        tsl_path = f.name

    lk = linkkit.LinkKit(host_name=host, product_key=pk, device_name=dn, device_secret=secret)
    lk.config_mqtt(port=port, protocol="MQTTv311", transport="TCP", secure="", keep_alive=60)
    lk.thing_setup(tsl_path)

    enabled, replied, subscribed, echoed = (threading.Event() for _ in range(4))
    seen = {}

    def on_thing_prop_post(request_id, code, data, message, userdata):
        seen["reply"] = {"request_id": str(request_id), "code": code, "message": message}
        replied.set()

    def on_subscribe_topic(mid, granted_qos, userdata):
        seen["granted_qos"] = list(granted_qos)
        subscribed.set()

    def on_topic_message(topic, payload, qos, userdata):
        seen["echo"] = {"topic": topic, "payload": payload.decode()}
        echoed.set()

    lk.on_thing_enable = lambda userdata: enabled.set()
    lk.on_thing_prop_post = on_thing_prop_post
    lk.on_subscribe_topic = on_subscribe_topic
    lk.on_topic_message = on_topic_message
    lk.connect_async()
    try:
        if not enabled.wait(WAIT_S):
            raise SystemExit("no connection")
        rc, request_id = lk.thing_post_property({"temperature": 21.5})
        if rc != 0:
            raise SystemExit("post failed locally: %s" % rc)
        seen["posted_request_id"] = str(request_id)
        if not replied.wait(WAIT_S):
            raise SystemExit("no property post reply")
        topic = "/%s/%s/user/get" % (pk, dn)
        lk.subscribe_topic(topic, 1)
        if not subscribed.wait(WAIT_S):
            raise SystemExit("no SUBACK")
        lk.publish_topic(topic, "hello from linkkit", 1)
        if not echoed.wait(WAIT_S):
            raise SystemExit("own message not received")
    finally:
        print(json.dumps(seen), flush=True)
        lk.disconnect()
        os.unlink(tsl_path)


if __name__ == "__main__":
    main()

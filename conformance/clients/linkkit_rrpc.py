"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, answering RRPC.

Usage: linkkit_rrpc.py HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET

Subscribes to user RRPC on /{pk}/{dn}/user/cmd (`subscribe_rrpc_topic`) and answers each call with
`pong:` + the request (`thing_answer_rrpc`); answers synchronous calls of its thing model's service
`calibrate` with code 200 and the parameters echoed (`thing_answer_service`; to the SDK, `set` and
`get` are the property services, not services of their own). Exits once it has answered one of
each, printing one JSON line with what it saw; non-zero if that did not happen in time.
"""

import json
import os
import sys
import tempfile
import threading

from linkkit import linkkit

WAIT_S = 30


def main():
    host, port, pk, dn, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    tsl = {
        "properties": [{"identifier": "temperature", "dataType": {"type": "float"}}],
        "events": [],
        "services": [{"identifier": "calibrate", "inputData": [{"identifier": "temperature"}]}],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(tsl, f)
        tsl_path = f.name

    lk = linkkit.LinkKit(host_name=host, product_key=pk, device_name=dn, device_secret=secret)
    lk.config_mqtt(port=port, protocol="MQTTv311", transport="TCP", secure="", keep_alive=60)
    lk.thing_setup(tsl_path)

    enabled, user_answered, service_answered = (threading.Event() for _ in range(3))
    seen = {}

    def on_topic_rrpc_message(rrpc_id, topic, payload, qos, userdata):
        seen["user"] = {"id": rrpc_id, "topic": topic, "payload": payload.decode()}
        lk.thing_answer_rrpc(rrpc_id, b"pong:" + payload)
        user_answered.set()

    def on_thing_call_service(identifier, request_id, params, userdata):
        seen["service"] = {"identifier": identifier, "request_id": request_id, "params": params}
        lk.thing_answer_service(identifier, request_id, 200, {"echo": params})
        service_answered.set()

    lk.on_thing_enable = lambda userdata: enabled.set()
    lk.on_topic_rrpc_message = on_topic_rrpc_message
    lk.on_thing_call_service = on_thing_call_service
    lk.connect_async()
    try:
        if not enabled.wait(WAIT_S):
            raise SystemExit("no connection")
        rc, _ = lk.subscribe_rrpc_topic("/%s/%s/user/cmd" % (pk, dn))
        if rc != 0:
            raise SystemExit("subscribe_rrpc_topic failed locally: %s" % rc)
        if not user_answered.wait(WAIT_S):
            raise SystemExit("no user RRPC call")
        if not service_answered.wait(WAIT_S):
            raise SystemExit("no service call")
    finally:
        print(json.dumps(seen), flush=True)
        lk.disconnect()
        os.unlink(tsl_path)


if __name__ == "__main__":
    main()

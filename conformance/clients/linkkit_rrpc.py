"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, answering RRPC.

Usage: linkkit_rrpc.py HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET

Subscribes to user RRPC on /{pk}/{dn}/user/cmd (`subscribe_rrpc_topic`) and answers each call with
`pong:` + the request (`thing_answer_rrpc`); answers synchronous calls of its thing model's service
`calibrate` with code 200 and the parameters echoed (`thing_answer_service`; to the SDK, `set` and
`get` are the property services, not services of their own); takes a property set (the SDK
answers `set_reply` by itself). Exits once it has seen one of each, printing one JSON line with
what it saw; non-zero if that did not happen in time.
"""

import threading

from linkkit_session import connected, device, wait


def main():
    tsl = {
        "properties": [{"identifier": "temperature", "dataType": {"type": "float"}}],
        "events": [],
        "services": [{"identifier": "calibrate", "inputData": [{"identifier": "temperature"}]}],
    }
    lk, pk, dn, tsl_path = device(tsl)
    user_answered, service_answered, property_set = (threading.Event() for _ in range(3))
    seen = {}

    def on_topic_rrpc_message(rrpc_id, topic, payload, qos, userdata):
        seen["user"] = {"id": rrpc_id, "topic": topic, "payload": payload.decode()}
        lk.thing_answer_rrpc(rrpc_id, b"pong:" + payload)
        user_answered.set()

    def on_thing_call_service(identifier, request_id, params, userdata):
        seen["service"] = {"identifier": identifier, "request_id": request_id, "params": params}
        lk.thing_answer_service(identifier, request_id, 200, {"echo": params})
        service_answered.set()

    def on_thing_prop_changed(params, userdata):
        seen["set"] = params
        property_set.set()

    lk.on_topic_rrpc_message = on_topic_rrpc_message
    lk.on_thing_prop_changed = on_thing_prop_changed
    lk.on_thing_call_service = on_thing_call_service
    with connected(lk, tsl_path, seen):
        rc, _ = lk.subscribe_rrpc_topic("/%s/%s/user/cmd" % (pk, dn))
        if rc != 0:
            raise SystemExit("subscribe_rrpc_topic failed locally: %s" % rc)
        wait(user_answered, "no user RRPC call")
        wait(service_answered, "no service call")
        wait(property_set, "no property set")


if __name__ == "__main__":
    main()

"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, against ironhub.

Usage: linkkit_device.py HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET

Connects over plain MQTT 3.1.1 (the SDK signs with hmacsha1 and adds its own unsigned client-id
parameters), posts a property and raises an event through the thing model and waits for each
Alink reply, then publishes on a custom topic it subscribed to and waits for its own message.
Prints one JSON line with what it saw; exits non-zero if any step failed or timed out.
"""

import threading

from linkkit_session import connected, device, wait


def main():
    tsl = {
        "properties": [{"identifier": "temperature", "dataType": {"type": "float"}}],
        "events": [{"identifier": "post", "outputData": [{"identifier": "temperature"}]},
                   {"identifier": "overheat", "outputData": [{"identifier": "temperature"}]}],
        "services": [{"identifier": "set", "inputData": [{"identifier": "temperature"}]}],
    }
    lk, pk, dn, tsl_path = device(tsl)
    replied, event_replied, subscribed, echoed = (threading.Event() for _ in range(4))
    seen = {}

    def on_thing_prop_post(request_id, code, data, message, userdata):
        seen["reply"] = {"request_id": str(request_id), "code": code, "message": message}
        replied.set()

    def on_thing_event_post(event, request_id, code, data, message, userdata):
        seen["event_reply"] = {"event": event, "request_id": str(request_id), "code": code}
        event_replied.set()

    def on_subscribe_topic(mid, granted_qos, userdata):
        seen["granted_qos"] = list(granted_qos)
        subscribed.set()

    def on_topic_message(topic, payload, qos, userdata):
        seen["echo"] = {"topic": topic, "payload": payload.decode()}
        echoed.set()

    lk.on_thing_prop_post = on_thing_prop_post
    lk.on_thing_event_post = on_thing_event_post
    lk.on_subscribe_topic = on_subscribe_topic
    lk.on_topic_message = on_topic_message
    with connected(lk, tsl_path, seen):
        rc, request_id = lk.thing_post_property({"temperature": 21.5})
        if rc != 0:
            raise SystemExit("post failed locally: %s" % rc)
        seen["posted_request_id"] = str(request_id)
        wait(replied, "no property post reply")
        lk.thing_trigger_event(("overheat", {"temperature": 99.5}))
        wait(event_replied, "no event post reply")
        topic = "/%s/%s/user/get" % (pk, dn)
        lk.subscribe_topic(topic, 1)
        wait(subscribed, "no SUBACK")
        lk.publish_topic(topic, "hello from linkkit", 1)
        wait(echoed, "own message not received")


if __name__ == "__main__":
    main()

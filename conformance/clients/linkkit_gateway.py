"""A stock Alibaba Cloud Link SDK gateway (PyPI aliyun-iot-linkkit), unmodified, carrying a
sub-device.

Usage: linkkit_gateway.py HOST PORT GW_PK GW_DN GW_SECRET SUB_PK SUB_DN SUB_SECRET SUB_PRODUCT_SECRET

Registers two new sub-devices of SUB_PK, `sdk-registered` (`gateway_register_subdev`:
`thing/sub/register`) and `sdk-provisioned` (`gateway_product_register_subdev`:
`thing/proxy/provisioning/product_register`, signed with the ProductSecret). Adds the sub-device to its topology (`gateway_add_subdev_topo`), logs it in
(`gateway_login_subdev`: `combine/batch_login`, signed with the sub-device's secret), subscribes
to the sub-device's `/user/get` topic, posts a property and publishes on `/user/get` as the
sub-device, waits for the property post's reply and the echo (both for the sub-device, on the
gateway's connection), then logs the sub-device out (`gateway_logout_subdev`). Prints one JSON
line with what it saw; non-zero if a step did not happen in time.
"""

import json
import sys
import threading

from linkkit_session import connected, device, wait


def main():
    spk, sdn, ssecret, product_secret = sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9]
    tsl = {"properties": [], "events": [], "services": []}
    lk, _, _, tsl_path = device(tsl)
    steps = {name: threading.Event() for name in ("register", "provision", "topo", "login", "sub", "reply", "echo", "logout")}
    seen = {}

    def replied(name):
        def on_reply(request_id, code, data, message, userdata):
            seen[name] = {"request_id": request_id, "code": code, "data": data, "message": message}
            steps[name].set()

        return on_reply

    lk.on_gateway_register_subdev_reply = replied("register")
    lk.on_gateway_product_register_subdev_reply = replied("provision")
    lk.on_gateway_add_subdev_topo_reply = replied("topo")
    lk.on_gateway_login_subdev_reply = replied("login")
    lk.on_gateway_logout_subdev_reply = replied("logout")
    lk.on_subscribe_topic = lambda mid, granted_qos, userdata: steps["sub"].set()

    def on_topic_message(topic, payload, qos, userdata):
        if topic == "/sys/%s/%s/thing/event/property/post_reply" % (spk, sdn):
            seen["reply"] = json.loads(payload)
            steps["reply"].set()
        elif topic == "/%s/%s/user/get" % (spk, sdn):
            seen["echo"] = {"topic": topic, "payload": payload.decode()}
            steps["echo"].set()

    lk.on_topic_message = on_topic_message
    with connected(lk, tsl_path, seen):
        lk.gateway_register_subdev([[spk, "sdk-registered"]])
        wait(steps["register"], "no sub/register reply")
        lk.gateway_product_register_subdev([[spk, "sdk-provisioned", product_secret]])
        wait(steps["provision"], "no product_register reply")
        lk.gateway_add_subdev_topo([[spk, sdn, ssecret]])
        wait(steps["topo"], "no topo/add reply")
        lk.gateway_login_subdev([[spk, sdn, ssecret]])
        wait(steps["login"], "no batch_login reply")
        lk.subscribe_topic("/%s/%s/user/get" % (spk, sdn), 1)
        wait(steps["sub"], "no SUBACK")
        post = {"id": "7", "version": "1.0", "params": {"temperature": 21.5},
                "method": "thing.event.property.post"}
        lk.publish_topic("/sys/%s/%s/thing/event/property/post" % (spk, sdn), json.dumps(post), 1)
        lk.publish_topic("/%s/%s/user/get" % (spk, sdn), "hello via the gateway", 1)
        wait(steps["reply"], "no property post reply for the sub-device")
        wait(steps["echo"], "no message for the sub-device")
        lk.gateway_logout_subdev([[spk, sdn]])
        wait(steps["logout"], "no batch_logout reply")


if __name__ == "__main__":
    main()

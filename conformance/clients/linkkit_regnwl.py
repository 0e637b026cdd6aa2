"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, registering itself
without pre-registration: MQTT dynamic registration with `auth_type="regnwl"`.

Usage: linkkit_regnwl.py HOST PORT PRODUCT_KEY DEVICE_NAME PRODUCT_SECRET

Connects with the ProductSecret and `authType=regnwl` and gets a client id and a device token on
`/ext/regnwl` (`on_device_dynamic_register_nwl_reply`); then connects as the SDK then does, with
that client id (`authType=connwl`), user name and token, and publishes on its user topic `update`.
Prints one JSON line with what it saw; non-zero if a step did not happen in time.
"""

import json
import sys
import threading

from linkkit import linkkit

from linkkit_session import wait


def main():
    host, port, pk, dn, product_secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    seen = {}
    registered, connected, published = (threading.Event() for _ in range(3))

    def on_reply(code, client_id, username, password):
        seen["register"] = {"code": code, "client_id": client_id, "username": username,
                            "token_length": len(password or "")}
        seen["login"] = (client_id, username, password)
        registered.set()

    lk = linkkit.LinkKit(host_name=host, product_key=pk, device_name=dn, device_secret="",
                         product_secret=product_secret, auth_type="regnwl")
    lk.config_mqtt(port=port, protocol="MQTTv311", transport="TCP", secure="", keep_alive=60)
    lk.on_device_dynamic_register_nwl_reply = on_reply
    lk.connect_async()
    try:
        wait(registered, "no /ext/regnwl answer")
        client_id, username, password = seen.pop("login")
        device = linkkit.LinkKit(host_name=host, product_key=pk, device_name=dn, device_secret="",
                                 client_id=client_id, username=username, password=password)
        device.config_mqtt(port=port, protocol="MQTTv311", transport="TCP", secure="", keep_alive=60)
        device.on_connect = lambda session_flag, rc, userdata: connected.set()
        device.on_publish_topic = lambda mid, userdata: published.set()
        device.connect_async()
        wait(connected, "no connection with the device token")
        topic = "/%s/%s/user/update" % (pk, dn)
        rc, _ = device.publish_topic(topic, "registered without pre-registration", 1)
        seen["publish_rc"] = rc
        wait(published, "the publish was not acknowledged")
        seen["published"] = True
        device.disconnect()
    finally:
        print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()

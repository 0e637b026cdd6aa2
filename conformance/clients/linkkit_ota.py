"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, upgrading its
firmware as the SDK's OTA functions do it.

Usage: linkkit_ota.py HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET NEW_VERSION [CA_FILE]

Reports version 1.0.0 (`ota_report_version`), waits for the upgrade push
(`on_ota_message_arrived`, type 1), downloads the package from the push's URL and checks its
digest (`download_ota_firmware`), reports progress on `/ota/device/progress`, asks for the upgrade
again (`query_ota_firmware`, answered as type 2), then reports NEW_VERSION. With CA_FILE, the
download's HTTPS certificate is checked against it (the SDK's `cadata`; Alibaba's CA otherwise).
Prints one JSON line with what it saw; non-zero if a step did not happen in time.
"""

import json
import os
import sys
import tempfile
import threading
import time

from linkkit_session import connected, device, wait


def main():
    new_version = sys.argv[6]
    tsl = {"properties": [], "events": [], "services": []}
    lk, pk, dn, tsl_path = device(tsl)
    if len(sys.argv) > 7:
        with open(sys.argv[7]) as ca:
            lk.config_mqtt(port=int(sys.argv[2]), protocol="MQTTv311", transport="TCP", secure="",
                           keep_alive=60, cadata=ca.read())
    pushed, pulled = threading.Event(), threading.Event()
    seen = {}

    def on_ota(kind, version, size, url, sign_method, sign, module, extra):
        notice = {"version": version, "size": size, "url": url, "sign_method": sign_method,
                  "sign": sign, "module": module}
        if kind == 1:
            seen["push"] = notice
            pushed.set()
        else:
            seen["pull"] = notice
            pulled.set()

    lk.on_ota_message_arrived = on_ota
    progress_topic = "/ota/device/progress/%s/%s" % (pk, dn)
    with connected(lk, tsl_path, seen):
        lk.ota_report_version(None, "1.0.0")
        wait(pushed, "no upgrade push")
        push = seen["push"]
        path = os.path.join(tempfile.mkdtemp(), "firmware.bin")
        seen["download"] = str(lk.download_ota_firmware(push["url"], path, push["sign_method"], push["sign"]))
        seen["downloaded_bytes"] = os.path.getsize(path)
        lk.publish_topic(progress_topic, json.dumps({"id": 1, "params": {"step": "50", "desc": "downloaded"}}), 1)
        lk.query_ota_firmware()
        wait(pulled, "no firmware/get reply")
        lk.publish_topic(progress_topic, json.dumps({"id": 2, "params": {"step": "100", "desc": "flashed"}}), 1)
        lk.ota_report_version(None, new_version)
        # The report has no reply: give it time to arrive before disconnecting.
        time.sleep(0.5)


if __name__ == "__main__":
    main()

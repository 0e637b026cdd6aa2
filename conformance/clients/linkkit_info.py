"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, telling the hub
about itself.

Usage: linkkit_info.py HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET

Sets two tags (`thing_update_device_info`: `thing/deviceinfo/update`), deletes one of them
(`thing_delete_device_info`: `thing/deviceinfo/delete`), waiting for each reply, and reports its
firmware version (`ota_report_version`: `/ota/device/inform`, which has no reply). Prints one
JSON line with what it saw; non-zero if a reply did not come in time.
"""

import threading
import time

from linkkit_session import connected, device, wait


def main():
    tsl = {"properties": [], "events": [], "services": []}
    lk, _, _, tsl_path = device(tsl)
    updated, deleted = threading.Event(), threading.Event()
    seen = {}

    def replied(name, event):
        def on_reply(request_id, code, data, message, userdata):
            seen[name] = {"request_id": request_id, "code": code, "data": data, "message": message}
            event.set()

        return on_reply

    lk.on_thing_device_info_update = replied("update", updated)
    lk.on_thing_device_info_delete = replied("delete", deleted)
    with connected(lk, tsl_path, seen):
        tags = [{"attrKey": "room", "attrValue": "greenhouse-3"},
                {"attrKey": "obsolete", "attrValue": "x"}]
        lk.thing_update_device_info(tags)
        wait(updated, "no deviceinfo/update reply")
        lk.thing_delete_device_info([{"attrKey": "obsolete"}])
        wait(deleted, "no deviceinfo/delete reply")
        seen["inform"] = str(lk.ota_report_version(None, "1.0.7"))
        # The report has no reply: give it time to arrive before disconnecting.
        time.sleep(0.5)


if __name__ == "__main__":
    main()

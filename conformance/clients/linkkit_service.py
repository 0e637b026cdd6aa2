"""A stock Alibaba Cloud Link SDK device (PyPI aliyun-iot-linkkit), unmodified, answering an
asynchronous service call.

Usage: linkkit_service.py HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET

Its thing model has the service `water` (input `duration`); the SDK subscribes to its service
topics and hands each call on `/sys/{pk}/{dn}/thing/service/water` to `on_thing_call_service`,
which answers with code 200 and `{"watered": duration}` (`thing_answer_service`, published on
`.../water_reply`). Exits once it has answered one, printing one JSON line with what it saw;
non-zero if that did not happen in time.
"""

import threading

from linkkit_session import connected, device, wait


def main():
    tsl = {
        "properties": [],
        "events": [],
        "services": [{"identifier": "water", "callType": "async",
                      "inputData": [{"identifier": "duration"}]}],
    }
    lk, _, _, tsl_path = device(tsl)
    answered = threading.Event()
    seen = {}

    def on_thing_call_service(identifier, request_id, params, userdata):
        seen["service"] = {"identifier": identifier, "request_id": request_id, "params": params}
        lk.thing_answer_service(identifier, request_id, 200, {"watered": params.get("duration")})
        answered.set()

    lk.on_thing_call_service = on_thing_call_service
    with connected(lk, tsl_path, seen):
        wait(answered, "no service call")
        # Give the answer time to leave before disconnecting.
        threading.Event().wait(0.5)


if __name__ == "__main__":
    main()

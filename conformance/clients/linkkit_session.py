"""What the Link SDK device scripts share: a stock LinkKit device for the command line's
HOST PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET with a thing model, and a session that connects it,
runs the script's steps and prints what the script saw as one JSON line, whatever happened."""

import contextlib
import json
import os
import sys
import tempfile
import threading

from linkkit import linkkit

WAIT_S = 30


def device(tsl):
    """The LinkKit device of the command line, with thing model `tsl`: (lk, pk, dn, tsl_path)."""
    host, port, pk, dn, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(tsl, f)
    lk = linkkit.LinkKit(host_name=host, product_key=pk, device_name=dn, device_secret=secret)
    lk.config_mqtt(port=port, protocol="MQTTv311", transport="TCP", secure="", keep_alive=60)
    lk.thing_setup(f.name)
    return lk, pk, dn, f.name


def wait(event, what):
    """Waits for `event`; exits naming `what` if it did not happen in time."""
    if not event.wait(WAIT_S):
        raise SystemExit(what)


@contextlib.contextmanager
def connected(lk, tsl_path, seen):
    """Connects `lk` (callbacks set), runs the block, then prints `seen` and disconnects."""
    enabled = threading.Event()
    lk.on_thing_enable = lambda userdata: enabled.set()
    lk.connect_async()
    try:
        wait(enabled, "no connection")
        yield
    finally:
        print(json.dumps(seen), flush=True)
        lk.disconnect()
        os.unlink(tsl_path)

"""A business server's consumer of an ironhub consumer group, with pika (docs/protocols/amqp.md).

Usage: python3 amqp_consumer.py <amqp-url> <queue> [<idle-seconds>]
Prints one JSON line per message (type, messageId, topic, device, payload) and acknowledges it
after printing; stops after <idle-seconds> without a message (default: run forever).
"""
import json
import sys

import pika


def main():
    url, queue = sys.argv[1], sys.argv[2]
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else None
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=100)
    # The queue exists as soon as the group does; consume it without redeclaring it.
    for method, props, body in channel.consume(queue, inactivity_timeout=idle):
        if method is None:  # idle for <idle-seconds>
            break
        headers = props.headers or {}
        print(json.dumps({
            "type": props.type,                      # upstream, status or lifecycle
            "messageId": props.message_id,           # unique: use it to drop duplicates
            "topic": headers.get("topic"),
            "productKey": headers.get("productKey"),
            "deviceName": headers.get("deviceName"),
            "generateTime": headers.get("generateTime"),
            "payload": body.decode("utf-8", "replace"),
        }), flush=True)
        channel.basic_ack(method.delivery_tag)       # at-least-once: ack after processing
    connection.close()


if __name__ == "__main__":
    main()

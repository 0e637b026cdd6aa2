"""A business server's consumer of an ironhub consumer group on SQS, with boto3
(docs/protocols/sqs.md).

Usage: python3 sqs_consumer.py <endpoint-url|aws> <region> <queue-name> [<idle-seconds>]
Prints one JSON line per message (type, messageId, topic, device, payload) and deletes it after
printing; stops after <idle-seconds> without a message (default: run forever).
"""
import base64
import json
import sys
import time

import boto3


def main():
    endpoint, region, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    idle = float(sys.argv[4]) if len(sys.argv) > 4 else None
    sqs = boto3.client("sqs", region_name=region,
                       endpoint_url=None if endpoint == "aws" else endpoint)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    last = time.monotonic()
    while idle is None or time.monotonic() - last < idle:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"])
        messages = got.get("Messages", [])
        if messages:
            last = time.monotonic()
        for m in messages:
            attrs = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
            body = m["Body"]
            if attrs.get("encoding") == "base64":   # binary payloads arrive base64-encoded
                body = base64.b64decode(body).hex()
            print(json.dumps({
                "type": attrs.get("type"),            # upstream, status or lifecycle
                "messageId": attrs.get("messageId"),  # unique: use it to drop duplicates
                "topic": attrs.get("topic"),
                "productKey": attrs.get("productKey"),
                "deviceName": attrs.get("deviceName"),
                "encoding": attrs.get("encoding"),
                "payload": body,
            }), flush=True)
        if messages:                                  # at-least-once: delete after processing
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


if __name__ == "__main__":
    main()

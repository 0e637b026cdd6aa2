"""A CoAP device written with aiocoap (a client that is not ironhub's), for the conformance tests.

Usage:
  coap_device.py auth <uri> <json>                       POST /auth, the signed JSON body
  coap_device.py publish <uri> <token> <payload> [non]   POST with the token in option 2088
  coap_device.py retransmit <host> <port> <path> <token> <payload>
      sends the same confirmable datagram twice (as a client does when its ACK is lost) and
      prints both answers
  coap_device.py ping <host> <port>                      an empty CON: expects a Reset
Prints one JSON object: {"code": "2.05", "payload": "...", ...}.
"""
import asyncio
import json
import socket
import sys
import warnings

import aiocoap
from aiocoap import Code, Message, numbers
from aiocoap.optiontypes import OpaqueOption

TOKEN_OPTION = 2088

# The retransmission test sets message ids, tokens and types by hand on purpose.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def token_option(token):
    return OpaqueOption(TOKEN_OPTION, token.encode())


async def publish(uri, token, payload, non):
    ctx = await aiocoap.Context.create_client_context()
    msg = Message(code=Code.POST, uri=uri, payload=payload.encode(),
                  mtype=numbers.NON if non else numbers.CON)
    msg.opt.add_option(token_option(token))
    response = await asyncio.wait_for(ctx.request(msg).response, 10)
    await ctx.shutdown()
    return {"code": str(response.code).split()[0], "payload": response.payload.decode()}


async def auth(uri, body):
    ctx = await aiocoap.Context.create_client_context()
    msg = Message(code=Code.POST, uri=uri, payload=body.encode())
    msg.opt.content_format = 50  # application/json
    response = await asyncio.wait_for(ctx.request(msg).response, 10)
    await ctx.shutdown()
    return {"code": str(response.code).split()[0], "payload": response.payload.decode()}


def exchange(sock, datagram, addr):
    sock.sendto(datagram, addr)
    data, _ = sock.recvfrom(65536)
    answer = Message.decode(data)
    return {"type": str(answer.mtype), "mid": answer.mid, "code": str(answer.code).split()[0],
            "payload": answer.payload.decode()}


def retransmit(host, port, path, token, payload):
    msg = Message(code=Code.POST, mtype=numbers.CON, mid=4242, token=b"\x01\x02",
                  payload=payload.encode())
    msg.opt.uri_path = [p for p in path.split("/") if p]
    msg.opt.add_option(token_option(token))
    datagram = msg.encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    addr = (host, int(port))
    first = exchange(sock, datagram, addr)
    second = exchange(sock, datagram, addr)
    return {"first": first, "second": second, "identical": first == second}


def ping(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.sendto(Message(code=Code.EMPTY, mtype=numbers.CON, mid=77).encode(), (host, int(port)))
    data, _ = sock.recvfrom(65536)
    answer = Message.decode(data)
    return {"type": str(answer.mtype), "mid": answer.mid}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "auth":
        result = asyncio.run(auth(args[0], args[1]))
    elif cmd == "publish":
        result = asyncio.run(publish(args[0], args[1], args[2], len(args) > 3 and args[3] == "non"))
    elif cmd == "retransmit":
        result = retransmit(*args)
    elif cmd == "ping":
        result = ping(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

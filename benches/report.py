"""Turns ironhub-bench JSON lines (Mosquitto and ironhub alternating) into docs/benchmarks.md."""
import json, os, platform, subprocess, sys

rows = [json.loads(l) for l in open(sys.argv[1])]
secs = sys.argv[2]

def scenario_name(r):
    p = r["params"]
    if r["scenario"] == "connect":
        return f"{p['connections']} idle connections from {p['sources']} source addresses"
    if r["scenario"] == "amqp":
        rate = "unthrottled" if p["rate"] == 0 else f"{p['rate']} msg/s"
        return f"devices -> AMQP consumer: {p['publishers']} devices x {rate}, QoS {p['qos']} (consumer group on RabbitMQ)"
    if r["scenario"] == "fan-out":
        return f"fan-out: 1 publisher x {p['rate']} msg/s -> {p['subscribers']} subscribers, QoS {p['qos']}"
    rate = "unthrottled" if p["rate"] == 0 else f"{p['rate']} msg/s"
    subscriber = "1 persistent subscriber" if p.get("persistent") else "1 subscriber"
    return f"fan-in: {p['publishers']} publishers x {rate}, QoS {p['qos']} -> {subscriber}"

pairs = {}
for r in rows:
    pairs.setdefault(scenario_name(r), {})[r["server"]] = r["result"]

def cpu_info():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

mosq_version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0:1]
out = []
out.append("# Benchmarks: ironhub side by side with Mosquitto\n")
out.append("Produced by `benches/compare` (this file is its output; rerun it to reproduce). Both brokers ran")
out.append("on the same machine in the same run, each in its own session, with the load generator")
out.append(f"`ironhub-bench` (rumqttc clients, MQTT 3.1.1, 64-byte payloads carrying their send time) on")
out.append(f"the same machine. Each load ran {secs} s, Mosquitto first, then ironhub.\n")
out.append(f"- machine: {os.cpu_count()} cores ({cpu_info()}), {platform.system()} {platform.release()}")
out.append(f"- reference: {' '.join(mosq_version) or 'mosquitto'} with Debian's defaults (anonymous listener on loopback) and `persistence true`")
out.append("- ironhub: release build, embedded store; anonymous scenarios use the open-broker mode with a")
out.append("  sandbox profile without rate limits and no per-connection bandwidth limit (a reference broker has")
out.append("  none); the connection scenario uses signed device credentials, so every CONNECT verifies an HMAC.\n")
out.append("CPU figures are the broker's own user + system time from /proc divided by the messages it")
out.append("delivered; they are steadier than throughput, which moves with the machine's load.\n")
out.append("| scenario | measure | Mosquitto | ironhub | ironhub / Mosquitto |")
out.append("|---|---|---|---|---|")

def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "us":
        return f"{v:.2f} us"
    if unit == "ms":
        return f"{v/1000:.1f} ms"
    if unit == "B":
        return f"{v:,.0f} B"
    return f"{v:,.0f}"

for name, by in pairs.items():
    m, i = by.get("mosquitto", {}), by.get("ironhub", {})
    if "connected" in m or "connected" in i:
        measures = [("connects per second", "connects_per_s", "n"), ("connected", "connected", "n"),
                    ("RSS growth per connection", "rss_per_connection_bytes", "B"), ("errors", "errors", "n")]
    else:
        measures = [("delivered / expected", None, None), ("delivered msg/s", "delivered_per_s", "n"),
                    ("broker CPU per delivered message", "server_cpu_us_per_msg", "us"),
                    ("latency p50", ("latency", "p50_us"), "ms"), ("latency p99", ("latency", "p99_us"), "ms"),
                    ("latency p99.9", ("latency", "p999_us"), "ms"), ("broker RSS after", "server_rss_bytes", "B"),
                    ("generator CPU (cores)", "generator_cores", "f")]
    for label, key, unit in measures:
        if key is None:
            cell = lambda x: f"{x.get('delivered', 0):,} / {x.get('expected', 0):,}" if x else "-"
            out.append(f"| {name} | {label} | {cell(m)} | {cell(i)} | |")
            continue
        get = lambda x: (x.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else x.get(key))
        mv, iv = get(m), get(i)
        ratio = f"{iv / mv:.2f}" if mv and iv is not None and mv != 0 else "-"
        if unit == "f":
            cell = lambda v: f"{v:.2f}" if v is not None else "-"
            out.append(f"| {name} | {label} | {cell(mv)} | {cell(iv)} | |")
        else:
            out.append(f"| {name} | {label} | {fmt(mv, unit)} | {fmt(iv, unit)} | {ratio} |")
print("\n".join(out))
print()
print(open(os.path.join(os.path.dirname(__file__), "notes.md")).read(), end="")

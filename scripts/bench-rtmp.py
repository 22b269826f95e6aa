#!/usr/bin/env python3
"""RTMP push benchmarks (docs/benchmarks.md, "RTMP push to SRS").

1. First frame through SRS: an SRS HTTP-FLV player waits for a stream that does not exist
   yet; then (a) an MQTT RTMP request goes to the gateway, which sends REQPULL to a
   simulated device waiting on MQTT, which connects, and the gateway pushes to SRS; or
   (b) with rtmp.auto_push, a device connects on its own. Measured: request (or device
   start) -> the first video key frame arriving at the SRS player.
2. CPU: N devices pushing to the gateway; the gateway's CPU with nothing else, with every
   stream pushed to SRS, and with one HTTP-FLV viewer (curl) per stream instead.

Usage: cargo build --release --bin jt1078-gateway && scripts/bench-rtmp.py [--streams 100]
Needs SRS 6 ($SRS_BIN, else `srs` on the PATH; `eval "$(scripts/tools.sh srs)"` finds or
builds one), mosquitto_pub, curl.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = os.path.join(ROOT, "target/release/jt1078-gateway")
SRS = os.environ.get("SRS_BIN") or shutil.which("srs")
SAMPLE = os.path.join(ROOT, "samples/sample-h264-g711a.jt1078")
CAPTURE = os.path.join(ROOT, "tests/data/h264-g711a-156987000796-ch1.jt1078")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never listened")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Srs:
    def __init__(self, tmp):
        self.rtmp, self.http, self.api, self.rtc = (free_port() for _ in range(4))
        conf = open(os.path.join(ROOT, "config/srs.conf")).read()
        for old, new in [
            ("listen              1935;", f"listen              {self.rtmp};"),
            ("listen          8080;", f"listen          {self.http};"),
            ("listen          1985;", f"listen          {self.api};"),
            ("listen          8000;", f"listen          {self.rtc};"),
            ("candidate       $CANDIDATE;", "candidate       127.0.0.1;"),
        ]:
            assert old in conf, old
            conf = conf.replace(old, new)
        os.makedirs(os.path.join(tmp, "objs/nginx/html"), exist_ok=True)
        path = os.path.join(tmp, "srs.conf")
        open(path, "w").write(conf)
        self.proc = subprocess.Popen([SRS, "-c", path], cwd=tmp,
                                     stdout=open(os.path.join(tmp, "srs.log"), "w"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.rtmp)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Gateway:
    def __init__(self, srs, tmp, auto_push=False):
        self.live, self.http, self.mqtt, self.ws = (free_port() for _ in range(4))
        env = dict(os.environ)
        env.update({
            "JTGW__INGEST__LIVE_LISTEN": f"127.0.0.1:{self.live}",
            "JTGW__INGEST__PLAYBACK_LISTEN": f"127.0.0.1:{free_port()}",
            "JTGW__HTTP__LISTEN": f"127.0.0.1:{self.http}",
            "JTGW__MQTT__EMBEDDED_LISTEN": f"127.0.0.1:{self.mqtt}",
            "JTGW__MQTT__EMBEDDED_WS_LISTEN": f"127.0.0.1:{self.ws}",
            "JTGW__RTMP__LIVE_URL": f"rtmp://127.0.0.1:{srs.rtmp}/live/{{device}}_{{channel}}",
            "JTGW__RTMP__AUTO_PUSH": "true" if auto_push else "false",
            "JTGW__LOG__LEVEL": "warn",
        })
        self.proc = subprocess.Popen([GATEWAY, "serve"], env=env,
                                     stdout=open(os.path.join(tmp, "gateway.log"), "a"),
                                     stderr=subprocess.STDOUT)
        wait_port(self.http)
        wait_port(self.mqtt)

    def request(self, device, mode, body):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt), "-q", "1",
                        "-t", f"jt1078/gateway/{device}/{mode}", "-m", body], check=True)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def srs_player(srs, stream):
    """An HTTP-FLV player of SRS, connected before the stream exists."""
    s = socket.create_connection(("127.0.0.1", srs.http))
    s.sendall(f"GET /live/{stream}.flv HTTP/1.1\r\nHost: srs\r\n\r\n".encode())
    return s


def wait_key_frame(player, timeout=30):
    """Reads until the first AVC key frame tag body (0x17 0x01) arrives; returns its time."""
    player.settimeout(timeout)
    got = b""
    while True:
        chunk = player.recv(65536)
        if not chunk:
            sys.exit("SRS closed the player")
        got += chunk
        if b"\x17\x01\x00\x00\x00" in got:
            return time.monotonic()


def first_frame(streams_tmp, runs):
    results = {"mqtt": [], "auto_push": []}
    srs = Srs(streams_tmp)
    try:
        gw = Gateway(srs, streams_tmp)
        try:
            for i in range(runs):
                device = f"1390000{i:04d}"
                sim = subprocess.Popen([GATEWAY, "simulate", "--file", SAMPLE, "--mqtt",
                                        f"mqtt://127.0.0.1:{gw.mqtt}", "--device", device,
                                        "--loop"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                time.sleep(1.5)  # the simulated device subscribes to its topic
                player = srs_player(srs, f"{device}_1")
                start = time.monotonic()
                gw.request(device, "RTMP", f'{{"seqid":"ff{i}","client_id":"bench"}}')
                results["mqtt"].append(wait_key_frame(player) - start)
                player.close()
                sim.kill()
                sim.wait()
        finally:
            gw.stop()
        gw = Gateway(srs, streams_tmp, auto_push=True)
        try:
            for i in range(runs):
                device = f"1391000{i:04d}"
                player = srs_player(srs, f"{device}_1")
                start = time.monotonic()
                sim = subprocess.Popen([GATEWAY, "simulate", "--file", SAMPLE, "--server",
                                        f"127.0.0.1:{gw.live}", "--device", device, "--loop"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                results["auto_push"].append(wait_key_frame(player) - start)
                player.close()
                sim.kill()
                sim.wait()
        finally:
            gw.stop()
    finally:
        srs.stop()
    for name, times in results.items():
        times = sorted(times)
        print(f"first frame through SRS, {name}: median {times[len(times) // 2] * 1000:.0f} ms, "
              f"min {times[0] * 1000:.0f}, max {times[-1] * 1000:.0f} ({len(times)} runs)")


def cpu(tmp, streams, window):
    srs = Srs(tmp)
    gw = Gateway(srs, tmp)
    devices = subprocess.Popen([GATEWAY, "simulate", "--file", CAPTURE, "--server",
                                f"127.0.0.1:{gw.live}", "--device", "13900000000", "--devices",
                                str(streams), "--loop"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    ids = [str(13900000000 + i) for i in range(streams)]

    def measure(label):
        time.sleep(5)  # settle
        before, t0 = cpu_seconds(gw.proc.pid), time.monotonic()
        time.sleep(window)
        used = (cpu_seconds(gw.proc.pid) - before) / (time.monotonic() - t0)
        print(f"{label}: gateway {used * 100:.1f} % of one core")
        return used

    try:
        base = measure(f"{streams} streams, nobody reading")
        for i, device in enumerate(ids):
            gw.request(device, "RTMP", f'{{"seqid":"c{i}","client_id":"bench"}}')
        push = measure(f"{streams} streams, each pushed to SRS")
        for i, device in enumerate(ids):
            gw.request(device, "UNSUBSCRIBE", f'{{"seqid":"u{i}","client_id":"bench"}}')
        time.sleep(3)
        curls = [subprocess.Popen(["curl", "-s", "-o", "/dev/null",
                                   f"http://127.0.0.1:{gw.http}/live/{d}_1.flv"])
                 for d in ids]
        view = measure(f"{streams} streams, one HTTP-FLV viewer each")
        for c in curls:
            c.kill()
            c.wait()
        per = lambda x: (x - base) * 100 / streams
        print(f"per stream: push {per(push):.3f} %, HTTP-FLV viewer {per(view):.3f} % of one core")
    finally:
        devices.kill()
        devices.wait()
        gw.stop()
        srs.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=float, default=20)
    args = parser.parse_args()
    if not SRS:
        sys.exit("SRS 6 not found: set SRS_BIN, put srs on the PATH, or run "
                 "'eval \"$(scripts/tools.sh srs)\"' first")
    with tempfile.TemporaryDirectory() as tmp:
        first_frame(tmp, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        cpu(tmp, args.streams, args.window)


if __name__ == "__main__":
    main()

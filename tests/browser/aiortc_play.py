"""A second WebRTC stack as the gateway's peer: aiortc (PyPI), not Chromium, not str0m.

Plays a stream signalled over WHEP (`--whep URL`) or MQTT (`--mqtt HOST:PORT --device D`)
and prints one JSON line: what it negotiated and decoded.

    python aiortc_play.py --whep http://127.0.0.1:9531/whep/live/156987000796_1 --frames 50
    python aiortc_play.py --mqtt 127.0.0.1:1883 --device 13800138000 --seqid s1

aiortc decodes H.264 with libavcodec (PyAV) and G.711 itself: the frame counts and sizes
are its own reading of what the gateway sent.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--whep")
    parser.add_argument("--mqtt")
    parser.add_argument("--device")
    parser.add_argument("--channel", type=int, default=1)
    parser.add_argument("--seqid", default="aiortc-1")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=20.0)
    return parser.parse_args()


def whep_signal(url, offer_sdp):
    """POSTs the offer; returns (answer SDP, status, Location)."""
    request = urllib.request.Request(
        url,
        data=offer_sdp.encode(),
        headers={"Content-Type": "application/sdp"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode(), response.status, response.headers.get("Location")


def whep_delete(url, location):
    base = url.split("/whep/")[0]
    request = urllib.request.Request(base + location, method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def mqtt_signal(address, device, channel, seqid, offer_sdp, timeout):
    """Publishes WEBRTC with the offer; returns the ANSWER body (or an ERROR/REFUSE)."""
    import paho.mqtt.client as mqtt

    host, port = address.rsplit(":", 1)
    replies = []
    subscribed = asyncio.Event()
    replied = asyncio.Event()
    loop = asyncio.get_running_loop()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"aiortc-{seqid}")

    def on_connect(client, userdata, flags, reason, properties):
        client.subscribe(f"jt1078/client/{seqid}/#", qos=1)

    def on_subscribe(client, userdata, mid, reasons, properties):
        loop.call_soon_threadsafe(subscribed.set)

    def on_message(client, userdata, message):
        body = json.loads(message.payload)
        body["topic"] = message.topic
        loop.call_soon_threadsafe(replies.append, body)
        loop.call_soon_threadsafe(replied.set)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, int(port))
    client.loop_start()

    async def exchange():
        await asyncio.wait_for(subscribed.wait(), timeout)
        body = {
            "seqid": seqid,
            "client_id": f"aiortc-{seqid}",
            "channel": channel,
            "offer": {"type": "offer", "sdp": offer_sdp},
        }
        client.publish(f"jt1078/gateway/{device}/WEBRTC", json.dumps(body), qos=1)
        try:
            await asyncio.wait_for(replied.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        return replies[0]

    return client, exchange()


async def count_frames(track, wanted, deadline):
    """Receives decoded frames until `wanted` (or the deadline): count and the last one."""
    count, last = 0, None
    while count < wanted and time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(track.recv(), max(0.1, deadline - time.monotonic()))
        except (asyncio.TimeoutError, MediaStreamError):
            break
        count += 1
        last = frame
    return count, last


async def main():
    args = parse_args()
    result = {"ok": False}
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    tracks = {}
    track_ready = asyncio.Event()

    @pc.on("track")
    def on_track(track):
        tracks[track.kind] = track
        if len(tracks) == 2:
            track_ready.set()

    started = time.monotonic()
    # aiortc gathers every candidate before the offer is set: no trickle, as the gateway
    await pc.setLocalDescription(await pc.createOffer())
    offer_sdp = pc.localDescription.sdp
    mqtt_client = None
    location = None
    try:
        if args.whep:
            answer_sdp, status, location = await asyncio.get_running_loop().run_in_executor(
                None, whep_signal, args.whep, offer_sdp
            )
            result["status"] = status
        else:
            mqtt_client, exchange = mqtt_signal(
                args.mqtt, args.device, args.channel, args.seqid, offer_sdp, args.timeout
            )
            reply = await exchange
            result["reply"] = reply
            if not reply or not reply.get("topic", "").endswith("/ANSWER"):
                raise RuntimeError(f"no ANSWER: {reply}")
            answer_sdp = reply["sdp"]
        result["answer_ms"] = round((time.monotonic() - started) * 1000)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        # the codec each transceiver sends with: the first of the answer's, as aiortc read it
        for transceiver in pc.getTransceivers():
            if transceiver._codecs:
                result[f"{transceiver.kind}_codec"] = transceiver._codecs[0].mimeType
        deadline = time.monotonic() + args.timeout
        await asyncio.wait_for(track_ready.wait(), args.timeout)
        video_task = asyncio.ensure_future(count_frames(tracks["video"], args.frames, deadline))
        audio_task = asyncio.ensure_future(count_frames(tracks["audio"], 50, deadline))
        video_frames, last_video = await video_task
        audio_frames, last_audio = await audio_task
        result["video_frames"] = video_frames
        if last_video is not None:
            result["width"], result["height"] = last_video.width, last_video.height
        result["audio_frames"] = audio_frames
        if last_audio is not None:
            result["audio_rate"] = last_audio.sample_rate
            result["audio_samples"] = last_audio.samples
        result["connection_state"] = pc.connectionState
        result["ok"] = video_frames >= args.frames
        if location:
            result["delete_status"] = await asyncio.get_running_loop().run_in_executor(
                None, whep_delete, args.whep, location
            )
    except Exception as error:  # the test reads the reason from the JSON line
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        await pc.close()
        if mqtt_client is not None:
            mqtt_client.loop_stop()
            mqtt_client.disconnect()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)

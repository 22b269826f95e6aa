"""Checks the browser harness without a gateway: runs driver.py as the Rust tests do and
plays loopback.html (a canvas sent from one RTCPeerConnection to another in the page).
Prints a summary, or the whole result and exits 1 unless the browser decoded the frames at
the canvas's size.

    target/pyenv/bin/python tests/browser/selftest.py
"""

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    driver = subprocess.Popen(
        [sys.executable, str(HERE / "driver.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = json.loads(driver.stdout.readline() or "{}")
    if not ready.get("ready"):
        sys.exit(f"the driver did not start: {ready}")
    command = {
        "id": 1,
        "page": "loopback.html",
        "params": {"min_frames": 50, "width": 320, "height": 240},
        "timeout_ms": 20000,
    }
    driver.stdin.write(json.dumps(command) + "\n")
    driver.stdin.flush()
    result = json.loads(driver.stdout.readline() or "{}")
    driver.stdin.close()
    driver.wait(timeout=30)
    video, audio = result.get("video") or {}, result.get("audio") or {}
    good = (
        result.get("ok")
        and video.get("framesDecoded", 0) >= 50
        and (video.get("frameWidth"), video.get("frameHeight")) == (320, 240)
        and str(video.get("mimeType")).startswith("video/")
        and str(audio.get("mimeType")).startswith("audio/")
    )
    if not good:
        print(json.dumps({"ready": ready, "result": result}), file=sys.stderr)
        sys.exit("the browser harness does not play: see the result above")
    print(
        f"chromium up in {ready['start_ms']} ms; {video['framesDecoded']} frames"
        f" {video['frameWidth']}x{video['frameHeight']} {video['mimeType']}"
        f" + {audio['mimeType']} decoded, page in {result.get('page_ms')} ms"
    )


if __name__ == "__main__":
    main()

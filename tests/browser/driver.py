"""Plays pages in one headless Chromium for the Rust tests (tests/common/browser.rs).

One process per test binary. It launches Debian's /usr/bin/chromium through playwright
(never `playwright install`), serves this directory, mqtt.js and mpegts.js over HTTP on 127.0.0.1,
then answers commands, one JSON line each on stdin:

    {"page": "whep.html", "params": {...}, "timeout_ms": 20000, "id": 7}

(or {"url": "http://…", "script": "console_check.js", "params": {...}, "screenshot":
"path.png", "viewport": {"width": …, "height": …}, …}: any page, checked by a script of
this directory run in it, which returns the result; a screenshot taken after it)

by opening the page in a new tab at /<page>?params=<JSON>, waiting for the page to set
window.__result, closing the tab and writing one JSON line on stdout: the page's result
plus "console" (the page's console errors and warnings), "page_ms" and the command's
"id", or {"error": ...} on a timeout or an exception. The first line is
{"ready": true, ...}. It exits when stdin closes, or when its parent dies (a watchdog),
taking the browser with it.
"""

import functools
import http.server
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MQTT_JS = ROOT / "target/npm/node_modules/mqtt/dist/mqtt.min.js"
MPEGTS_JS = ROOT / "target/npm/node_modules/mpegts.js/dist/mpegts.js"
HLS_JS = ROOT / "target/npm/node_modules/hls.js/dist/hls.js"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    # host candidates as IP addresses, not .local names nothing here resolves
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--mute-audio",
    # offline and quiet: nothing but the pages' own traffic
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


class Handler(http.server.SimpleHTTPRequestHandler):
    """This directory, plus /mqtt.min.js, /mpegts.js and /hls.js from target/npm; never cached, never
    logged."""

    extensions_map = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        "": "application/octet-stream",
    }

    def translate_path(self, path):
        if urllib.parse.urlsplit(path).path == "/mqtt.min.js":
            return str(MQTT_JS)
        if urllib.parse.urlsplit(path).path == "/mpegts.js":
            return str(MPEGTS_JS)
        if urllib.parse.urlsplit(path).path == "/hls.js":
            return str(HLS_JS)
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):
        pass


def serve():
    handler = functools.partial(Handler, directory=str(HERE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def descendants(pid):
    """Every live process below `pid` (from /proc), children first."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants():
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def watchdog(parent, profile):
    """Ends everything once the test binary is gone: it may have been killed while we wait
    on a page, and a test binary that exits leaves no time for a graceful close either."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            kill_descendants()
            shutil.rmtree(profile, ignore_errors=True)
            os._exit(1)


def run_page(context, base, command):
    page_name = command.get("page")
    params = command.get("params", {})
    timeout_ms = float(command.get("timeout_ms", 30000))
    # a page of this directory, or (with "url") any page, e.g. the gateway's console
    url = command.get("url") or (
        f"{base}/{page_name}?" + urllib.parse.urlencode({"params": json.dumps(params)})
    )
    console = []
    started = time.monotonic()
    page = context.new_page()
    page.on(
        "console",
        lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        if command.get("viewport"):
            page.set_viewport_size(command["viewport"])
        page.goto(url, timeout=timeout_ms)
        if command.get("script"):
            # a file of this directory holding `async (params) => result`, run in the page;
            # it bounds its own waits (params.timeout_ms)
            source = (HERE / command["script"]).read_text()
            result = page.evaluate(source, {**params, "timeout_ms": timeout_ms})
            if not isinstance(result, dict):
                result = {"error": "the script's result is not an object", "value": result}
        else:
            left = max(1.0, timeout_ms - (time.monotonic() - started) * 1000)
            try:
                page.wait_for_function(
                    "() => window.__result !== undefined", timeout=left, polling=20
                )
            except Exception as e:
                if type(e).__name__ != "TimeoutError":
                    raise
                stage = page.evaluate("() => window.__stage ?? null")
                result = {"error": f"no result within {timeout_ms:.0f} ms (stage: {stage})"}
            else:
                result = json.loads(page.evaluate("() => JSON.stringify(window.__result)"))
                if not isinstance(result, dict):
                    result = {"error": "window.__result is not an object", "value": result}
        if command.get("screenshot"):
            page.screenshot(path=command["screenshot"])
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    finally:
        try:
            page.close()
        except Exception as e:
            console.append(f"closing the tab: {e}")
    result["console"] = console
    result["page_ms"] = round((time.monotonic() - started) * 1000)
    return result


def main():
    # stdout carries the protocol: anything else printed goes to stderr
    out = sys.stdout
    sys.stdout = sys.stderr

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    server = serve()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    profile = tempfile.mkdtemp(prefix="jt1078-chromium-")
    threading.Thread(
        target=watchdog, args=(os.getppid(), profile), name="watchdog", daemon=True
    ).start()
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=ARGS,
                # the HTTPS tests serve a throwaway self-signed certificate
                ignore_https_errors=True,
            )
            try:
                send(
                    {
                        "ready": True,
                        "base": base,
                        "mqtt_js": MQTT_JS.is_file(),
                        "mpegts_js": MPEGTS_JS.is_file(),
                        "hls_js": HLS_JS.is_file(),
                        "start_ms": round((time.monotonic() - started) * 1000),
                    }
                )
                for line in sys.stdin:
                    if not line.strip():
                        continue
                    command = None
                    try:
                        command = json.loads(line)
                        result = run_page(context, base, command)
                    except Exception as e:
                        command = command if isinstance(command, dict) else {}
                        result = {"error": f"bad command: {type(e).__name__}: {e}"}
                    if "id" in command:
                        result["id"] = command["id"]
                    send(result)
            finally:
                context.close()
    except Exception as e:
        send({"error": f"browser: {type(e).__name__}: {e}"})
        raise
    finally:
        server.shutdown()
        kill_descendants()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()

// Drives the gateway's console (tests/console_browser.rs): waits for the streams the test
// pushes, asks a cold device for its camera with the page's SUBSCRIBE button (the reply
// and the REQPULL must show in the page's log, the stream in its table), plays a stream
// over HTTP-FLV (mpegts.js: frames decoded, audio decoded) and over WHEP (frames decoded),
// records it with the page's RECORD button and plays the recording back (hls.js: frames
// decoded), and returns what it saw. params: { pushed: [device…], cold: device, play: key, timeout_ms }
async (params) => {
  const started = performance.now();
  const deadline = started + params.timeout_ms - 3000;
  const c = window.jt1078Console;
  const result = { stage: "start" };
  const until = async (what, check) => {
    result.stage = what;
    while (!(await check())) {
      if (performance.now() > deadline) throw new Error(`timed out: ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const rowOf = (device) =>
    [...document.querySelectorAll("#streams tbody tr")].find((tr) =>
      tr.dataset.key.endsWith(`/${device}_1`),
    );
  const logText = () => document.getElementById("mqtt-log").textContent;
  try {
    // the streams pushed before the page opened
    await until("pushed streams listed", () => params.pushed.every((d) => rowOf(d)));
    // since the page began to load (the SSE stream is opened by the page itself)
    result.pushed_listed_ms = Math.round(performance.now());
    result.rows = document.querySelectorAll("#streams tbody tr").length;
    // SUBSCRIBE a cold device from the page, as a backend would
    await until("broker connected", () => logText().includes("connected to the broker"));
    document.getElementById("req-device").value = params.cold;
    document.getElementById("req-channel").value = "1";
    document.getElementById("subscribe").click();
    await until("OK reply shown", () => /\/client\/console-[^/]+\/OK /.test(logText()));
    await until("REQPULL shown", () => logText().includes(`/device/${params.cold}/REQPULL`));
    await until("cold stream listed", () => rowOf(params.cold));
    const cold = [...c.streams.entries()].find(([k]) => k.endsWith(`/${params.cold}_1`));
    result.cold_first_listed_uptime_s = cold[1].firstUptime;
    result.log = [...document.querySelectorAll("#mqtt-log li")].map((li) => li.textContent);
    // the gateway (retained status) and the device (heartbeat, live stream) listed
    const devices = () => document.getElementById("devices").textContent;
    await until("gateway and device listed", () =>
      devices().includes("online") && devices().includes(`${params.cold}: live: 1/live`),
    );
    result.devices = [...document.querySelectorAll("#devices li")].map((li) => li.textContent);
    // play over HTTP-FLV: click the row
    rowOf(params.play).click();
    const video = document.getElementById("video");
    await until("FLV frames decoded", () => video.getVideoPlaybackQuality().totalVideoFrames >= 20);
    await until("FLV audio decoded", () => (video.webkitAudioDecodedByteCount || 0) > 0);
    result.flv = {
      frames: video.getVideoPlaybackQuality().totalVideoFrames,
      width: video.videoWidth,
      height: video.videoHeight,
      audio_bytes: video.webkitAudioDecodedByteCount,
      muted: video.muted,
    };
    // the same stream over WHEP: the toggle
    document.querySelector("input[name=via][value=whep]").click();
    const inbound = async (kind) => {
      if (!c.pc) return null;
      const stats = await c.pc.getStats();
      return [...stats.values()].find((s) => s.type === "inbound-rtp" && s.kind === kind) || null;
    };
    await until("WHEP frames decoded", async () => ((await inbound("video"))?.framesDecoded || 0) >= 20);
    await until("WHEP audio received", async () => ((await inbound("audio"))?.packetsReceived || 0) > 0);
    const v = await inbound("video");
    result.whep = {
      frames: v.framesDecoded,
      width: v.frameWidth,
      height: v.frameHeight,
      audio_packets: (await inbound("audio")).packetsReceived,
    };
    // record the playing stream from the page (MQTT RECORD), play the recording back
    // through hls.js once the playlist has a segment, and stop it
    document.getElementById("req-device").value = params.play;
    document.getElementById("req-channel").value = "1";
    document.getElementById("record-start").click();
    await until("RECORD reply with its playlist", () => document.querySelector("button.play-recording"));
    const recordRow = () => rowOf(params.play)?.textContent || "";
    const playlist = new URL(c.lastRecord.hls, location.origin);
    result.record_playlist = playlist.pathname;
    await until("a recorded segment", async () => {
      const text = await (await fetch(playlist.pathname + playlist.search)).text();
      return text.includes("#EXTINF");
    });
    document.querySelector("button.play-recording").click();
    await until("recording frames decoded", () => video.getVideoPlaybackQuality().totalVideoFrames >= 10);
    result.recording = {
      frames: video.getVideoPlaybackQuality().totalVideoFrames,
      width: video.videoWidth,
      height: video.videoHeight,
      row: recordRow(),
    };
    document.getElementById("record-stop").click();
    await until("RECORD stop answered", () => (logText().match(/"action":"stop"/g) || []).length >= 1);
    // back to HTTP-FLV for the screenshot, the stats beside the player filled in
    document.querySelector("input[name=via][value=flv]").click();
    await until("FLV playing again", () => video.getVideoPlaybackQuality().totalVideoFrames >= 10);
    await until("stats shown", () => document.getElementById("play-stats").textContent.includes("frames decoded"));
    result.stage = "done";
    result.ok = true;
  } catch (e) {
    result.error = String(e);
    result.log = [...document.querySelectorAll("#mqtt-log li")].map((li) => li.textContent);
  }
  return result;
}

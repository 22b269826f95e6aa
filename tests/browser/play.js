// What whep.html and mqtt.html share: reading the page's parameters, making a receive-only
// offer, playing until enough frames are decoded, and reading getStats() into the result
// object that driver.py hands back to the Rust tests (tests/common/browser.rs).
//
// A page ends by setting window.__result exactly once (Play.finish); window.__stage says
// where it is, so a driver timeout can tell what the page was waiting for.
"use strict";

const Play = (() => {
  const now = () => performance.now();
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** The `params` query parameter (JSON), with the playing defaults filled in. */
  function params(defaults) {
    const raw = new URLSearchParams(location.search).get("params");
    const given = raw ? JSON.parse(raw) : {};
    return Object.assign(
      {
        video: true,
        audio: true,
        min_frames: 50,
        max_ms: 15000,
        hold_ms: 0,
        close: true,
      },
      defaults || {},
      given,
    );
  }

  function stage(what) {
    window.__stage = what;
  }

  function finish(result) {
    if (window.__result === undefined) {
      result.stage = window.__stage;
      window.__result = result;
    }
  }

  /** Runs `main` and turns an exception into `{ok: false, error}`. */
  function run(main) {
    stage("start");
    main().catch((e) => finish({ ok: false, error: String(e?.message ?? e), stack: e?.stack ?? null }));
  }

  /** Adds the receive-only transceivers, makes the offer and waits for ICE gathering. */
  async function offer(pc, p) {
    render(pc);
    if (p.video) pc.addTransceiver("video", { direction: "recvonly" });
    if (p.audio) pc.addTransceiver("audio", { direction: "recvonly" });
    stage("create offer");
    await pc.setLocalDescription(await pc.createOffer());
    return gathered(pc);
  }

  /** Plays what `pc` receives in a media element: audio is decoded (and counted in
   * totalSamplesReceived) only while something renders it. */
  function render(pc) {
    pc.addEventListener("track", (e) => {
      const element = document.createElement(e.track.kind);
      element.autoplay = true;
      element.srcObject = e.streams[0] || new MediaStream([e.track]);
      document.body.appendChild(element);
      element.play().catch((err) => console.warn(`play(): ${err}`));
    });
  }

  /** The local description once ICE gathering is complete (at most 2 s), so that it
   * carries every host candidate: the gateway takes no trickled candidates. */
  async function gathered(pc) {
    stage("ice gathering");
    if (pc.iceGatheringState !== "complete") {
      await Promise.race([
        new Promise((resolve) =>
          pc.addEventListener("icegatheringstatechange", () => {
            if (pc.iceGatheringState === "complete") resolve();
          }),
        ),
        sleep(2000),
      ]);
    }
    return pc.localDescription;
  }

  /** "udp 192.0.2.2:43022 host" for each candidate line of a description. */
  function candidates(description) {
    return (description?.sdp ?? "")
      .split(/\r?\n/)
      .filter((l) => l.startsWith("a=candidate:"))
      .map((l) => {
        const f = l.split(" ");
        const ip = f[4].includes(":") ? `[${f[4]}]` : f[4];
        return `${f[2].toLowerCase()} ${ip}:${f[5]} ${f[7]}`;
      });
  }

  function address(candidate) {
    if (!candidate) return null;
    const ip = candidate.address ?? candidate.ip ?? "?";
    return ip.includes(":") ? `[${ip}]:${candidate.port}` : `${ip}:${candidate.port}`;
  }

  /** The media and ICE figures of one getStats() report. */
  function summarize(report) {
    const inbound = { video: null, audio: null };
    let transport = null;
    const pairs = [];
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        const kind = s.kind ?? s.mediaType;
        const best = inbound[kind];
        if (!best || (s.packetsReceived ?? 0) > (best.packetsReceived ?? 0)) inbound[kind] = s;
      } else if (s.type === "transport") {
        transport = s;
      } else if (s.type === "candidate-pair") {
        pairs.push(s);
      }
    });
    const mime = (s) => (s && s.codecId && report.get(s.codecId)?.mimeType) || null;
    const v = inbound.video;
    const a = inbound.audio;
    const selected =
      (transport && transport.selectedCandidatePairId && report.get(transport.selectedCandidatePairId)) ||
      pairs.find((p) => p.state === "succeeded" && p.nominated) ||
      pairs.find((p) => p.state === "succeeded") ||
      null;
    const pair = (p) => {
      const local = report.get(p.localCandidateId);
      const remote = report.get(p.remoteCandidateId);
      return {
        local: address(local),
        remote: address(remote),
        local_type: local?.candidateType ?? null,
        remote_type: remote?.candidateType ?? null,
        protocol: local?.protocol ?? null,
        state: p.state,
        nominated: !!p.nominated,
        bytes_received: p.bytesReceived ?? 0,
      };
    };
    return {
      video: {
        framesDecoded: v?.framesDecoded ?? 0,
        frameWidth: v?.frameWidth ?? null,
        frameHeight: v?.frameHeight ?? null,
        mimeType: mime(v),
        packetsReceived: v?.packetsReceived ?? 0,
        packetsLost: v?.packetsLost ?? 0,
        framesDropped: v?.framesDropped ?? 0,
      },
      audio: {
        packetsReceived: a?.packetsReceived ?? 0,
        packetsLost: a?.packetsLost ?? 0,
        mimeType: mime(a),
        totalSamplesReceived: a?.totalSamplesReceived ?? 0,
        concealedSamples: a?.concealedSamples ?? 0,
      },
      ice: selected ? Object.assign(pair(selected), { pairs: pairs.map(pair) }) : { pairs: pairs.map(pair) },
    };
  }

  /** Polls getStats() every 20 ms until `min_frames` video frames are decoded (audio
   * packets received when there is no video) or `max_ms` passes, waits `hold_ms`, and
   * returns the last figures with `reached`, `first_frame_ms` (from `t0`) and the
   * connection state ("connected"; "failed" when ICE or DTLS failed). */
  async function play(pc, p, t0) {
    stage("playing");
    const deadline = now() + p.max_ms;
    const count = (s) => (p.video ? s.video.framesDecoded : s.audio.packetsReceived);
    let firstFrameMs = null;
    let reached = false;
    for (;;) {
      const s = summarize(await pc.getStats());
      if (firstFrameMs === null && count(s) > 0) firstFrameMs = Math.round(now() - t0);
      if (count(s) >= p.min_frames) {
        reached = true;
        break;
      }
      if (now() >= deadline) break;
      await sleep(20);
    }
    if (p.hold_ms > 0) {
      stage("holding");
      await sleep(p.hold_ms);
    }
    const s = summarize(await pc.getStats());
    if (firstFrameMs === null && count(s) > 0) firstFrameMs = Math.round(now() - t0);
    Object.assign(s, {
      reached,
      first_frame_ms: firstFrameMs,
      connection_state: pc.connectionState,
      candidates: candidates(pc.localDescription),
    });
    if (!reached) {
      const what = p.video ? "video frames decoded" : "audio packets received";
      s.error = `${count(s)} ${what} in ${p.max_ms} ms, wanted ${p.min_frames} (connection ${pc.connectionState})`;
    }
    return s;
  }

  return { now, sleep, params, stage, finish, run, offer, gathered, play, summarize };
})();

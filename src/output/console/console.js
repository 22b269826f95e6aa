// The jt1078-gateway console: the live streams from GET /api/events (Server-Sent Events,
// read with fetch so the API token can go in a header), a player (HTTP-FLV through
// mpegts.js, or WebRTC through WHEP), requests to devices over MQTT (WebSocket) as a
// backend sends them (RECORD too, its recording played back with hls.js), and the devices'
// heartbeats. No build step: plain script.
"use strict";

const HISTORY = 300; // samples of the bit rate kept per stream: 5 minutes at one a second
const query = new URLSearchParams(location.search);
const state = {
  token: sessionStorage.getItem("jt1078.token") || "",
  basic: sessionStorage.getItem("jt1078.basic") || "", // base64 of user:password (an MQTT viewer or admin)
  streams: new Map(), // key → { snapshot, history: [{ t, bytes }] }
  selected: null, // key of the stream playing
  player: null, // mpegts.js player
  hls: null, // hls.js player of a recording
  pc: null, // RTCPeerConnection of a WHEP play
  whepSession: null, // its Location
  mqtt: null,
  devices: new Map(), // device → { heart: last heartbeat (ms), streams: Set of live "channel/kind" }
  gateways: new Map(), // gateway id → its retained status ("online", "offline")
  asked: new Set(), // devices this page sent a request about: their status goes to the log too
};
window.jt1078Console = state;

const $ = (id) => document.getElementById(id);
const keyOf = (s) => `${s.kind}/${s.device}_${s.channel}`;

function authHeaders() {
  if (state.token) return { Authorization: `Bearer ${state.token}` };
  return state.basic ? { Authorization: `Basic ${state.basic}` } : {};
}

// ---- the live table ------------------------------------------------------------------

async function follow() {
  for (;;) {
    try {
      const response = await fetch("/api/events", { headers: authHeaders() });
      if (response.status === 401 || response.status === 403) {
        setConn("login needed", "down");
        askLogin(await response.text());
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      setConn("live", "live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      console.debug("events:", error);
    }
    setConn("reconnecting…", "down");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function onEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (event === "streams" && data.length) onStreams(JSON.parse(data.join("\n")));
}

function onStreams(list) {
  const now = Date.now();
  const seen = new Set();
  for (const s of list) {
    const key = keyOf(s);
    seen.add(key);
    let entry = state.streams.get(key);
    // how long it had been live when this page first listed it
    if (!entry) state.streams.set(key, (entry = { history: [], firstUptime: s.uptime_secs }));
    entry.snapshot = s;
    entry.history.push({ t: now, bytes: s.bytes_in });
    if (entry.history.length > HISTORY) entry.history.shift();
  }
  for (const key of [...state.streams.keys()]) if (!seen.has(key)) state.streams.delete(key);
  render();
}

/// kbit/s between consecutive samples.
function rates(history) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const dt = (history[i].t - history[i - 1].t) / 1000;
    if (dt > 0) out.push(Math.max(0, ((history[i].bytes - history[i - 1].bytes) * 8) / 1000 / dt));
  }
  return out;
}

function sparkline(values) {
  const w = 120, h = 18;
  if (values.length < 2) return "";
  const max = Math.max(...values, 1);
  // a minute wide at first, then up to the 5 minutes kept
  const step = w / (Math.max(values.length, 60) - 1);
  const x0 = w - (values.length - 1) * step;
  const points = values
    .map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - (v / max) * (h - 2) - 1).toFixed(1)}`)
    .join(" ");
  return `<svg class="spark" width="${w}" height="${h}"><polyline points="${points}"/></svg>`;
}

const text = (v) => String(v ?? "").replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

function render() {
  const rows = [...state.streams.entries()].sort(([a], [b]) => a.localeCompare(b));
  const body = $("streams").tBodies[0];
  body.innerHTML = rows
    .map(([key, { snapshot: s, history }]) => {
      const r = rates(history);
      const now = r.length ? r[r.length - 1] : s.bitrate_kbps;
      const audio = s.audio_codec
        ? `${s.audio_codec}${s.audio_codec_out.length ? " → " + s.audio_codec_out.join(", ") : ""}`
        : "—";
      const viewers = Object.entries(s.viewers_by_output)
        .map(([o, n]) => `${o} ${n}`)
        .join(" · ");
      return `<tr data-key="${text(key)}" class="${key === state.selected ? "selected" : ""}">
        <td>${text(s.device)}</td><td>${s.channel}</td><td>${text(s.kind)}</td>
        <td>${text(s.video_codec ?? "—")} / ${text(audio)}</td>
        <td>${s.width ? `${s.width}×${s.height}` : "—"}</td><td>${s.fps}</td>
        <td>${now.toFixed(0)} kbit/s${sparkline(r)}</td>
        <td>${s.viewers}${viewers ? ` (${text(viewers)})` : ""}</td>
        <td>${s.frames_dropped} frames, ${s.viewers_dropped} viewers</td>
        <td>${text(s.recording ?? "—")}</td></tr>`;
    })
    .join("");
  $("no-streams").hidden = rows.length > 0;
  const viewers = rows.reduce((n, [, e]) => n + e.snapshot.viewers, 0);
  $("summary").textContent = `${rows.length} streams · ${viewers} viewers`;
  const playing = state.selected && state.streams.get(state.selected);
  if (playing) showStats(playing.snapshot);
}

function setConn(label, cls) {
  const badge = $("conn");
  badge.textContent = label;
  badge.className = `badge ${cls}`;
}

// ---- login ---------------------------------------------------------------------------

function askLogin(reason) {
  $("login").hidden = false;
  $("login-error").textContent = state.token || state.basic ? reason : "";
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  // the API token, or a user of [[mqtt.users]] with the viewer or admin role
  const user = $("login-user").value.trim();
  state.token = user ? "" : $("token").value.trim();
  state.basic = user ? btoa(`${user}:${$("login-password").value}`) : "";
  sessionStorage.setItem("jt1078.token", state.token);
  sessionStorage.setItem("jt1078.basic", state.basic);
  $("login").hidden = true;
  follow();
});

// ---- the player ----------------------------------------------------------------------

$("streams").tBodies[0].addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-key]");
  if (row) play(row.dataset.key);
});
for (const radio of document.querySelectorAll("input[name=via]")) {
  radio.addEventListener("change", () => state.selected && play(state.selected));
}
$("stop-play").addEventListener("click", () => stopPlay());

function via() {
  return document.querySelector("input[name=via]:checked").value;
}

async function stopPlay() {
  if (state.player) {
    state.player.destroy();
    state.player = null;
  }
  if (state.hls) {
    state.hls.destroy();
    state.hls = null;
  }
  if (state.pc) {
    state.pc.close();
    state.pc = null;
    if (state.whepSession) {
      fetch(state.whepSession, { method: "DELETE", headers: authHeaders() }).catch(() => {});
      state.whepSession = null;
    }
  }
  const video = $("video");
  video.removeAttribute("src");
  video.srcObject = null;
  state.selected = null;
  $("playing").textContent = "";
  render();
}

async function play(key) {
  await stopPlay();
  state.selected = key;
  $("playing").textContent = `${key} over ${via() === "flv" ? "HTTP-FLV" : "WebRTC"}`;
  const video = $("video");
  if (via() === "flv") {
    const player = mpegts.createPlayer(
      { type: "flv", isLive: true, url: `${location.origin}/${key}.flv` },
      { enableStashBuffer: false, liveBufferLatencyChasing: true },
    );
    player.attachMediaElement(video);
    player.load();
    state.player = player;
    video.muted = false;
    video.play().catch((e) => console.debug("autoplay:", e));
  } else {
    const pc = new RTCPeerConnection();
    state.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      video.srcObject = stream;
      video.play().catch((err) => console.debug("autoplay:", err));
    };
    await pc.setLocalDescription(await pc.createOffer());
    const response = await fetch(`/whep/${key}`, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", ...authHeaders() },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) {
      $("play-stats").textContent = `WHEP: HTTP ${response.status} ${await response.text()}`;
      return;
    }
    state.whepSession = new URL(response.headers.get("Location"), location.origin).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  }
  render();
}

// A recording's HLS playlist (a RECORD reply's `record.hls`), through hls.js, or natively
// where the browser plays HLS itself (Safari).
async function playRecording(url) {
  await stopPlay();
  const video = $("video");
  $("playing").textContent = `recording ${url.split("?")[0].split("/").pop()}`;
  if (window.Hls && Hls.isSupported()) {
    const auth = authHeaders().Authorization;
    const hls = new Hls({ xhrSetup: (xhr) => auth && xhr.setRequestHeader("Authorization", auth) });
    hls.on(Hls.Events.ERROR, (_, data) => data.fatal && log(`recording: ${data.type} ${data.details}`, "error"));
    hls.loadSource(url);
    hls.attachMedia(video);
    state.hls = hls;
  } else {
    video.src = url;
  }
  video.muted = false;
  video.play().catch((e) => console.debug("autoplay:", e));
}

function showStats(s) {
  const video = $("video");
  const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
  $("play-stats").textContent = [
    `${s.device} channel ${s.channel} (${s.kind}), up ${s.uptime_secs} s`,
    `video ${s.video_codec ?? "—"} ${s.width ? `${s.width}×${s.height}` : ""} at ${s.fps} fps`,
    `audio ${s.audio_codec ?? "—"} → ${s.audio_codec_out.join(", ") || "—"}`,
    `in ${s.frames_in} frames, ${s.bytes_in} bytes; out ${s.bytes_out} bytes`,
    `dropped ${s.frames_dropped} frames, ${s.viewers_dropped} viewers; resyncs ${s.resyncs}`,
    `this page: ${quality.totalVideoFrames ?? 0} frames decoded, ${quality.droppedVideoFrames ?? 0} dropped`,
  ].join("\n");
}

// ---- requests over MQTT --------------------------------------------------------------

$("mqtt-url").value =
  query.get("mqtt") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname}:8083/mqtt`;

function log(line, cls = "") {
  const item = document.createElement("li");
  item.className = cls;
  item.textContent = `${new Date().toLocaleTimeString()} ${line}`;
  $("mqtt-log").prepend(item);
  return item;
}

function broker() {
  if (state.mqtt) return state.mqtt;
  const prefix = $("prefix").value.trim();
  const client = mqtt.connect($("mqtt-url").value.trim(), {
    clientId: `jt1078-console-${Math.random().toString(16).slice(2, 10)}`,
    // a backend (or admin) login of the broker; none: anonymous (allowed from loopback)
    username: $("mqtt-user").value.trim() || undefined,
    password: $("mqtt-password").value || undefined,
    reconnectPeriod: 2000,
  });
  client.on("connect", () => {
    log("connected to the broker");
    // heartbeats, and the retained status of every gateway (the cluster) and stream
    client.subscribe([
      `${prefix}/gateway/+/HEART`,
      `${prefix}/status/gateway/+`,
      `${prefix}/status/stream/#`,
    ]);
  });
  client.on("error", (e) => log(`broker: ${e.message}`, "error"));
  client.on("message", (topic, payload) => onMessage(prefix, topic, payload.toString()));
  state.mqtt = client;
  return client;
}

function device(id) {
  let d = state.devices.get(id);
  if (!d) state.devices.set(id, (d = { heart: null, streams: new Set() }));
  return d;
}

function onMessage(prefix, topic, body) {
  const parts = topic.slice(prefix.length + 1).split("/");
  if (parts[0] === "gateway" && parts[2] === "HEART") {
    device(parts[1]).heart = Date.now();
    renderDevices();
    return;
  }
  if (parts[0] === "status" && parts[1] === "gateway" && parts.length === 3) {
    try {
      state.gateways.set(parts[2], JSON.parse(body).status);
    } catch {
      state.gateways.set(parts[2], "?");
    }
    renderDevices();
    return;
  }
  if (parts[0] === "status" && parts[1] === "stream") {
    const [, , id, channel, kind = "live"] = parts;
    let live = false;
    try {
      live = JSON.parse(body).live === true;
    } catch {}
    const streams = device(id).streams;
    live ? streams.add(`${channel}/${kind}`) : streams.delete(`${channel}/${kind}`);
    renderDevices();
    if (!state.asked.has(id)) return;
  }
  const cls = parts[0] === "client" ? (parts[2] === "OK" ? "reply" : "error") : "";
  const line = log(`${topic} ${body}`, cls);
  // a RECORD reply names the recording's playlist: a button plays it
  let record = null;
  try {
    record = parts[0] === "client" ? JSON.parse(body).record : null;
  } catch {}
  if (record && record.hls) {
    state.lastRecord = record;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "play-recording";
    button.textContent = "play recording";
    button.addEventListener("click", () => playRecording(new URL(record.hls, location.origin).href));
    line.append(" ", button);
  }
}

function renderDevices() {
  const now = Date.now();
  const gateways = [...state.gateways.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([id, status]) => `<li>gateway ${text(id)}: ${text(status)}</li>`);
  const devices = [...state.devices.entries()]
    .filter(([, d]) => d.streams.size > 0 || (d.heart && now - d.heart < 120000))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([id, d]) => {
      const heart = d.heart ? `heartbeat ${Math.round((now - d.heart) / 1000)} s ago` : "no heartbeat";
      const live = d.streams.size ? `live: ${[...d.streams].sort().join(", ")}` : "not streaming";
      return `<li>${text(id)}: ${live}; ${heart}</li>`;
    });
  $("devices").innerHTML = gateways.concat(devices).join("");
}
setInterval(renderDevices, 5000);

function request(mode, extra = {}) {
  const client = broker();
  const prefix = $("prefix").value.trim();
  const device = $("req-device").value.trim();
  const channel = Number($("req-channel").value) || 1;
  if (!device) return log("a device id is needed", "error");
  const seqid = `console-${Date.now().toString(36)}-${(state.sent = (state.sent || 0) + 1)}`;
  state.asked.add(device);
  // the reply, the command to the device (REQPULL, STOP) and the stream's status
  client.subscribe([
    `${prefix}/client/${seqid}/#`,
    `${prefix}/device/${device}/#`,
    `${prefix}/status/stream/${device}/${channel}`,
  ]);
  const body = JSON.stringify({ seqid, client_id: client.options.clientId, channel, ...extra });
  client.publish(`${prefix}/gateway/${device}/${mode}`, body, { qos: 1 });
  log(`→ ${prefix}/gateway/${device}/${mode} ${body}`);
}

$("connect").addEventListener("click", () => {
  if (state.mqtt) state.mqtt.end(true);
  state.mqtt = null;
  broker();
});
$("subscribe").addEventListener("click", () => request("SUBSCRIBE"));
$("unsubscribe").addEventListener("click", () => request("UNSUBSCRIBE"));
$("record-start").addEventListener("click", () =>
  request("RECORD", { action: "start", duration: $("rec-duration").value.trim() || "10m" }),
);
$("record-stop").addEventListener("click", () => request("RECORD", { action: "stop" }));
if (query.get("mqtt") !== "off") broker();

follow();

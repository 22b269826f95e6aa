//! A real browser for the WebRTC tests: one headless Chromium per test binary, driven by
//! `tests/browser/driver.py` (playwright, Debian's `/usr/bin/chromium`; see
//! `tests/browser/README.md`), playing `tests/browser/whep.html` or `mqtt.html`
//! and reporting what it decoded from `getStats()`.
//!
//! The driver reads one JSON command a line on stdin and answers one JSON line on stdout,
//! tagged with the command's `id` so that an answer arriving after its timeout is skipped.
//! It exits when its stdin closes (this process exiting closes it) or when its parent
//! changes (a watchdog), so no Chromium outlives the tests. Pages play one at a time: the
//! browser sits behind a mutex.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

/// How long the driver may take to start Chromium.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// What a page needs beyond its own playing time: ICE gathering (at most 2 s), the
/// signalling round trip, DTLS, opening and closing the tab.
const PAGE_OVERHEAD: Duration = Duration::from_secs(20);
/// How long [`Browser::run`] waits for the driver beyond the page's own timeout.
const DRIVER_GRACE: Duration = Duration::from_secs(10);

/// The driver process and its browser; killed on drop.
pub(crate) struct Browser {
    child: Child,
    stdin: ChildStdin,
    /// Lines the driver wrote on stdout (a reader thread fills it).
    lines: Receiver<String>,
    /// The driver's `ready` line (its HTTP base URL, start time).
    pub(crate) ready: Value,
    next_id: u64,
}

/// What to play and for how long.
#[derive(Debug, Clone)]
pub(crate) struct PlayOptions {
    pub(crate) video: bool,
    pub(crate) audio: bool,
    /// Video frames decoded (audio packets received when `video` is false) that end the
    /// play early.
    pub(crate) min_frames: u64,
    /// The longest the play waits for `min_frames`.
    pub(crate) max: Duration,
    /// How long it keeps playing after that, before the last reading.
    pub(crate) hold: Duration,
    /// Ends the session at the end (WHEP `DELETE`, `pc.close()`).
    pub(crate) close: bool,
    /// WHEP: a bearer token.
    pub(crate) token: Option<String>,
    /// MQTT: the request's seqid (random when `None`).
    pub(crate) seqid: Option<String>,
    /// MQTT: the request's `client_id` (left out when `None`).
    pub(crate) client_id: Option<String>,
}

/// What the page reported; every field is optional in the JSON (an error result has few).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PlayResult {
    /// 201 (MQTT: an ANSWER), and `min_frames` reached.
    pub(crate) ok: bool,
    /// `min_frames` reached.
    pub(crate) reached: bool,
    /// The HTTP status of the WHEP POST.
    pub(crate) status: Option<u16>,
    /// A non-201 body, a page exception, a timeout, a refusal, or too few frames.
    pub(crate) error: Option<String>,
    /// The WHEP session URL (`Location`, resolved against the endpoint).
    pub(crate) location: Option<String>,
    /// From the POST (MQTT: the publish) to the answer.
    pub(crate) answer_ms: Option<u64>,
    /// From just before `createOffer` to the first stats poll with a frame decoded (an
    /// audio packet when there is no video).
    pub(crate) first_frame_ms: Option<u64>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) video: VideoStats,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) audio: AudioStats,
    /// The status of the WHEP `DELETE`.
    pub(crate) delete_status: Option<u16>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) ice: IceStats,
    /// `pc.connectionState` at the end: `connected`, or `failed` when ICE or DTLS failed.
    pub(crate) connection_state: Option<String>,
    /// The offer's candidates, as `"udp 192.0.2.2:43022 host"`.
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) candidates: Vec<String>,
    /// MQTT: where the reply came (`…/client/{seqid}/ANSWER`, `/REFUSE`, `/ERROR`).
    pub(crate) reply_topic: Option<String>,
    /// MQTT: the reply (an ANSWER's `sdp` shortened to its length).
    pub(crate) reply: Option<Value>,
    /// MQTT: the seqid the request carried.
    pub(crate) seqid: Option<String>,
    /// Where the page was when it finished.
    pub(crate) stage: Option<String>,
    /// The page's console errors and warnings.
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) console: Vec<String>,
    /// From opening the tab to closing it.
    pub(crate) page_ms: Option<u64>,
    /// The whole result as the page sent it.
    #[serde(skip)]
    pub(crate) raw: Value,
}

/// `inbound-rtp` of kind video, with its codec's `mimeType`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct VideoStats {
    pub(crate) frames_decoded: u64,
    pub(crate) frame_width: Option<u32>,
    pub(crate) frame_height: Option<u32>,
    /// `video/H264`, `video/H265`…
    pub(crate) mime_type: Option<String>,
    pub(crate) packets_received: u64,
    pub(crate) packets_lost: i64,
    pub(crate) frames_dropped: u64,
}

/// `inbound-rtp` of kind audio, with its codec's `mimeType`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AudioStats {
    pub(crate) packets_received: u64,
    pub(crate) packets_lost: i64,
    /// `audio/PCMA`, `audio/opus`…
    pub(crate) mime_type: Option<String>,
    pub(crate) total_samples_received: u64,
    pub(crate) concealed_samples: u64,
}

/// The selected candidate pair, and every pair.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct IceStats {
    /// The browser's side, `address:port` (`[v6]:port`).
    pub(crate) local: Option<String>,
    /// The gateway's side.
    pub(crate) remote: Option<String>,
    pub(crate) local_type: Option<String>,
    pub(crate) remote_type: Option<String>,
    pub(crate) protocol: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) pairs: Vec<IcePair>,
}

/// One `candidate-pair` of the browser's stats.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct IcePair {
    pub(crate) local: Option<String>,
    pub(crate) remote: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) nominated: bool,
    pub(crate) bytes_received: u64,
}

impl Browser {
    /// Starts the driver and waits (60 s at most) for Chromium to be up.
    pub(crate) fn start() -> Browser {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("target/pyenv/bin/python");
        let mut child = Command::new(&python)
            .arg(root.join("tests/browser/driver.py"))
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} could not start: {e} (run scripts/test.sh to install the browser tests' \
                     tools)",
                    python.display()
                )
            });
        let stdin = child.stdin.take().expect("driver stdin");
        let stdout = child.stdout.take().expect("driver stdout");
        // one answer is pending at a time; stale ones are few (one per timed-out page)
        let (line_tx, lines) = sync_channel(16);
        std::thread::Builder::new()
            .name("browser-driver".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line_tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the driver reader");
        let mut browser = Browser {
            child,
            stdin,
            lines,
            ready: Value::Null,
            next_id: 1,
        };
        let ready = match browser.lines.recv_timeout(READY_TIMEOUT) {
            Ok(line) => serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line)),
            Err(e) => panic!("the browser driver did not start within {READY_TIMEOUT:?}: {e}"),
        };
        assert_eq!(
            ready["ready"], true,
            "the browser driver failed to start: {ready}"
        );
        browser.ready = ready;
        browser
    }

    /// The browser every test of this binary shares, started on first use.
    pub(crate) fn shared() -> &'static Mutex<Browser> {
        static SHARED: OnceLock<Mutex<Browser>> = OnceLock::new();
        SHARED.get_or_init(|| Mutex::new(Browser::start()))
    }

    /// Opens `page` (a file of `tests/browser/`) with `params` in a new tab and returns
    /// the page's result, or `{"error": …}` when it has none within `timeout`. Blocking.
    /// A driver that died is started again.
    pub(crate) fn run(&mut self, page: &str, params: Value, timeout: Duration) -> Value {
        let command = json!({ "page": page, "params": params });
        self.send(command, page, timeout)
    }

    /// Opens `url` (any page) in a new tab, runs `script` (a file of `tests/browser/`
    /// holding `async (params) => result`) in it and returns its result; with `screenshot`,
    /// writes a PNG of the page there after the script. Blocking.
    pub(crate) fn run_script(
        &mut self,
        url: &str,
        script: &str,
        params: Value,
        screenshot: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Value {
        let command = json!({
            "url": url,
            "script": script,
            "params": params,
            "screenshot": screenshot.map(|p| p.display().to_string()),
            "viewport": { "width": 1280, "height": 800 },
        });
        self.send(command, script, timeout)
    }

    fn send(&mut self, mut command: Value, page: &str, timeout: Duration) -> Value {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!("the browser driver had exited ({status}): starting it again");
            *self = Browser::start();
        }
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        command["timeout_ms"] = json!(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        if let Err(e) = writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush()) {
            return error(format!("writing to the browser driver: {e}"));
        }
        let wait = timeout + DRIVER_GRACE;
        loop {
            let line = match self.lines.recv_timeout(wait) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    return error(format!("the driver did not answer {page} within {wait:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return error("the browser driver exited".to_owned());
                }
            };
            let answer: Value = match serde_json::from_str(&line) {
                Ok(answer) => answer,
                Err(e) => return error(format!("driver line is not JSON ({e}): {line}")),
            };
            // an answer to an earlier command whose wait timed out
            if answer.get("id").is_some_and(|a| *a != json!(id)) {
                continue;
            }
            return answer;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // it may have exited already: nothing to kill then
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Default for PlayOptions {
    fn default() -> PlayOptions {
        PlayOptions {
            video: true,
            audio: true,
            min_frames: 50,
            max: Duration::from_secs(15),
            hold: Duration::ZERO,
            close: true,
            token: None,
            seqid: None,
            client_id: None,
        }
    }
}

impl PlayOptions {
    /// The parameters both pages share.
    fn params(&self) -> Value {
        json!({
            "video": self.video,
            "audio": self.audio,
            "min_frames": self.min_frames,
            "max_ms": u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX),
            "hold_ms": u64::try_from(self.hold.as_millis()).unwrap_or(u64::MAX),
            "close": self.close,
        })
    }

    /// How long the driver waits for the page.
    fn timeout(&self) -> Duration {
        self.max + self.hold + PAGE_OVERHEAD
    }
}

impl PlayResult {
    /// Parses a page's result; one that does not fit is an error result keeping `raw`.
    pub(crate) fn from_raw(raw: Value) -> PlayResult {
        let mut result = PlayResult::deserialize(&raw).unwrap_or_else(|e| PlayResult {
            error: Some(format!("unexpected result ({e}): {raw}")),
            ..PlayResult::default()
        });
        result.raw = raw;
        result
    }
}

/// Plays the WHEP endpoint `url` (POST offer, expect 201 + answer + Location).
pub(crate) async fn play_whep(url: &str, opts: &PlayOptions) -> PlayResult {
    let mut params = opts.params();
    params["url"] = json!(url);
    params["token"] = json!(opts.token);
    play("whep.html", params, opts.timeout()).await
}

/// Asks for `device`/`channel` over MQTT on the broker's WebSocket `ws_url` (prefix
/// `jt1078`, a live stream) and plays the answer.
pub(crate) async fn play_mqtt(
    ws_url: &str,
    device: &str,
    channel: u8,
    opts: &PlayOptions,
) -> PlayResult {
    let mut params = opts.params();
    params["ws_url"] = json!(ws_url);
    params["prefix"] = json!("jt1078");
    params["device"] = json!(device);
    params["channel"] = json!(channel);
    params["kind"] = json!("live");
    params["seqid"] = json!(opts.seqid);
    params["client_id"] = json!(opts.client_id);
    play("mqtt.html", params, opts.timeout()).await
}

/// Runs `page` in the shared browser on a blocking thread.
pub(crate) async fn play(page: &'static str, params: Value, timeout: Duration) -> PlayResult {
    let raw = tokio::task::spawn_blocking(move || {
        Browser::shared()
            .lock()
            // a test that panicked while playing left the browser usable
            .unwrap_or_else(PoisonError::into_inner)
            .run(page, params, timeout)
    })
    .await
    .expect("the browser task");
    PlayResult::from_raw(raw)
}

/// A result saying what went wrong outside the page.
fn error(message: String) -> Value {
    json!({ "error": message })
}

/// `null` in the page's JSON reads as the field's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

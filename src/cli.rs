//! Command line: `serve`, `simulate`, `pack`, `print-config`, `sign-url`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::codec::h26x::VideoCodec;
use crate::codec::jt1078::{PayloadType, SimLayout};
use crate::config::Settings;
use crate::media::DeviceId;
use crate::simulate::pack::{PackOptions, pack};
use crate::simulate::{self, Pace, SimulateOptions};

/// Video codecs `pack` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PackCodec {
    /// H.264 Annex-B.
    H264,
    /// H.265 Annex-B.
    H265,
}

/// Audio codecs `pack` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PackAudio {
    /// Raw G.711 A-law bytes (`ffmpeg ... -f alaw`), PT 6.
    Alaw,
    /// Raw G.711 µ-law bytes (`ffmpeg ... -f mulaw`), PT 7.
    Mulaw,
    /// Raw G.726 code words (`ffmpeg ... -c:a g726 -f g726` or `g726le`), PT 8.
    G726,
    /// 16-bit little-endian 8 kHz PCM (`-f s16le`), encoded here as IMA ADPCM frames with
    /// their 4-byte state block, as devices send them, PT 26.
    Adpcm,
    /// ADTS AAC (`-c:a aac -f adts`), one ADTS frame a packet, PT 19.
    Aac,
}

/// JT/T 1078 vehicle video gateway.
#[derive(Debug, Parser)]
#[command(name = "jt1078-gateway", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file overlaid on the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replay a recorded .jt1078 stream into a gateway as one or more devices.
    Simulate {
        /// The recorded stream (raw JT/T 1078 bytes as a device sends them).
        #[arg(long)]
        file: PathBuf,
        /// Gateway ingest address, e.g. 127.0.0.1:9501 (not needed with --mqtt).
        #[arg(long, required_unless_present = "mqtt")]
        server: Option<String>,
        /// Act as MQTT-controlled devices: wait for REQPULL/PLAYBACK on
        /// {prefix}/device/{id}/# at this broker (mqtt://host:port), push where it says,
        /// stop on STOP. A broker that is not reachable is retried with growing delays
        /// (0.5 s to 30 s).
        #[arg(long)]
        mqtt: Option<String>,
        /// Topic prefix with --mqtt.
        #[arg(long, default_value = "jt1078")]
        topic_prefix: String,
        /// With --mqtt: the broker's `mqtt.device_secret`; each device logs in as its id
        /// with the HMAC password of it (a user and password in the --mqtt URL,
        /// mqtt://user:pass@host:port, serve for all devices otherwise).
        #[arg(long, requires = "mqtt")]
        device_secret: Option<String>,
        /// With --mqtt: answer a REQPULL for two-way talk (data type 2) or broadcast (4)
        /// with a talk connection: the file's audio as the cab's microphone (not for a
        /// broadcast), and what the gateway sends decoded (see --talk-out).
        #[arg(long, requires = "mqtt")]
        talk: bool,
        /// With --talk: write what the gateway said, decoded, to this WAV file (16-bit,
        /// 8 kHz, mono) when the talk ends.
        #[arg(long, requires = "talk")]
        talk_out: Option<PathBuf>,
        /// Device id to send as (default: the file's SIM); further devices count up.
        #[arg(long)]
        device: Option<String>,
        /// Logical channel to send as (default: the file's).
        #[arg(long)]
        channel: Option<u8>,
        /// Number of simulated devices.
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Pacing: by the stream's timestamps, or as fast as possible.
        #[arg(long, value_enum, default_value_t = Pace::Realtime)]
        pace: Pace,
        /// Start over at the end of the file, forever. Like a terminal, a looping device
        /// whose connection fails (the gateway restarted, say) reconnects, after 0.5 s
        /// doubling up to 10 s, and goes on from the start of the file.
        #[arg(long = "loop")]
        looping: bool,
    },
    /// Pack an H.264/H.265 Annex-B file (and optional raw G.711 audio) into a .jt1078
    /// recording that `simulate` can replay.
    Pack {
        /// Annex-B video elementary stream.
        #[arg(long)]
        video: PathBuf,
        /// Video codec of `--video`.
        #[arg(long, value_enum, default_value_t = PackCodec::H264)]
        codec: PackCodec,
        /// Video frame rate.
        #[arg(long, default_value_t = 25)]
        fps: u32,
        /// Raw 8 kHz mono G.711 A-law samples (e.g. `ffmpeg ... -f alaw`); the same as
        /// `--audio FILE --audio-codec alaw`.
        #[arg(long, conflicts_with = "audio")]
        alaw: Option<PathBuf>,
        /// Audio to pack, in the form `--audio-codec` says.
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Codec of `--audio`.
        #[arg(long, value_enum, default_value_t = PackAudio::Alaw)]
        audio_codec: PackAudio,
        /// Bytes per audio frame (ADPCM: including the 4-byte state block). Default: 20 ms
        /// of G.711 (160), 320 samples of G.726 at 32 kbit/s (160), 320 samples of ADPCM
        /// (164).
        #[arg(long)]
        audio_frame: Option<usize>,
        /// Milliseconds per audio frame (default: from the codec and frame size; G.726
        /// needs it for rates other than 32 kbit/s).
        #[arg(long)]
        audio_frame_ms: Option<u64>,
        /// Put the 4-byte HiSilicon header (`00 01 LL 00`) in front of each audio frame.
        #[arg(long)]
        hisilicon: bool,
        /// ADPCM: put the later sample in the low nibble (some devices do).
        #[arg(long)]
        high_nibble_first: bool,
        /// Device id to write into the SIM field.
        #[arg(long, default_value = "13800138000")]
        device: String,
        /// Logical channel.
        #[arg(long, default_value_t = 1)]
        channel: u8,
        /// Use the 20-digit SIM header (JT/T 808-2019) instead of the 2016 one.
        #[arg(long)]
        sim20: bool,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the merged configuration (defaults, file, environment) as TOML-like JSON;
    /// passwords, tokens and secrets are shown redacted.
    PrintConfig {
        /// Configuration file overlaid on the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a play URL signed with http.play_secret: PATH is a path such as
    /// /live/13800138000_1.flv (the gateway's control.public_host and HTTP port are put in
    /// front) or a whole URL (signed over its path).
    SignUrl {
        /// The path or URL to sign.
        path: String,
        /// How long the URL stays valid, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Configuration file overlaid on the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Read a password from stdin (its first line) and print its argon2id PHC string, for
    /// `password_hash` of `[[mqtt.users]]`.
    HashPassword,
}

impl Cli {
    /// Runs the chosen subcommand until it finishes or Ctrl-C.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve { config } => {
                let settings = Settings::load(config.as_deref())?;
                crate::telemetry::init(&settings.log.level);
                raise_open_files_limit(settings.ingest.max_connections.get());
                let app = App::bind(settings).await?;
                app.run(shutdown_on_ctrl_c()).await
            }
            Command::Simulate {
                file,
                server,
                device,
                channel,
                devices,
                pace,
                looping,
                mqtt,
                topic_prefix,
                device_secret,
                talk,
                talk_out,
            } => {
                crate::telemetry::init("info");
                let device = device
                    .map(|d| DeviceId::parse(&d))
                    .transpose()
                    .context("--device")?;
                let packets = simulate::load_file(&file)?;
                if let Some(url) = mqtt {
                    let first = match &device {
                        Some(d) => d.clone(),
                        None => packets
                            .first()
                            .map(|p| DeviceId::from_sim(&p.sim))
                            .context("empty recording")?,
                    };
                    let base: u64 = first.as_str().parse().context("--device")?;
                    let devices = (0..devices.max(1) as u64)
                        .map(|i| DeviceId::parse(&(base + i).to_string()))
                        .collect::<Result<Vec<_>, _>>()
                        .context("--device")?;
                    let options = simulate::mqtt_device::MqttDeviceOptions {
                        packets: Arc::new(packets),
                        url,
                        topic_prefix,
                        devices,
                        pace,
                        looping,
                        device_secret,
                        talk,
                        talk_out,
                    };
                    return simulate::mqtt_device::run(options, shutdown_on_ctrl_c()).await;
                }
                let server = resolve(server.as_deref().unwrap_or_default()).await?;
                let options = SimulateOptions {
                    packets: Arc::new(packets),
                    server,
                    device,
                    channel,
                    devices,
                    pace,
                    looping,
                };
                let report = simulate::run(options, shutdown_on_ctrl_c()).await?;
                if report.connected == 0 {
                    anyhow::bail!("no simulated device could connect to {server}");
                }
                Ok(())
            }
            Command::Pack {
                video,
                codec,
                fps,
                alaw,
                audio,
                audio_codec,
                audio_frame,
                audio_frame_ms,
                hisilicon,
                high_nibble_first,
                device,
                channel,
                sim20,
                out,
            } => {
                let video_bytes = std::fs::read(&video)
                    .with_context(|| format!("reading {}", video.display()))?;
                let audio_codec = if alaw.is_some() {
                    PackAudio::Alaw
                } else {
                    audio_codec
                };
                let mut audio_bytes = alaw
                    .or(audio)
                    .map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display())))
                    .transpose()?;
                let (payload_type, default_frame, default_ms) = match audio_codec {
                    PackAudio::Alaw => (PayloadType::G711A, 160, None),
                    PackAudio::Mulaw => (PayloadType::G711U, 160, None),
                    PackAudio::G726 => (PayloadType::G726, 160, Some(40)),
                    PackAudio::Adpcm => (PayloadType::AdpcmA, 164, None),
                    PackAudio::Aac => (PayloadType::Aac, 0, None),
                };
                let audio_frame = audio_frame.unwrap_or(default_frame);
                let audio_frame_ms = audio_frame_ms.or(default_ms).or(
                    // ADPCM: two samples a byte after the state block, 8 kHz
                    (audio_codec == PackAudio::Adpcm).then(|| (audio_frame as u64 - 4) / 4),
                );
                if audio_codec == PackAudio::Adpcm {
                    if audio_frame < 6 {
                        anyhow::bail!(
                            "--audio-frame {audio_frame}: ADPCM frames need the 4-byte state block and samples"
                        );
                    }
                    audio_bytes = audio_bytes.map(|pcm| {
                        simulate::pack::encode_adpcm_frames(
                            &pcm,
                            (audio_frame - 4) * 2,
                            high_nibble_first,
                        )
                    });
                }
                let options = PackOptions {
                    device: DeviceId::parse(&device).context("--device")?.to_string(),
                    channel,
                    layout: if sim20 {
                        SimLayout::Bcd10
                    } else {
                        SimLayout::Bcd6
                    },
                    fps,
                    audio_frame,
                    audio_frame_ms,
                    hisilicon,
                    ..PackOptions::default()
                };
                let codec = match codec {
                    PackCodec::H264 => VideoCodec::H264,
                    PackCodec::H265 => VideoCodec::H265,
                };
                let audio = audio_bytes.as_deref().map(|a| (payload_type, a));
                let packed = pack(codec, &video_bytes, audio, &options)
                    .context("--device does not fit the SIM field")?;
                std::fs::write(&out, &packed)
                    .with_context(|| format!("writing {}", out.display()))?;
                println!("wrote {} ({} bytes)", out.display(), packed.len());
                Ok(())
            }
            Command::HashPassword => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                println!("{}", hash_password(&line)?);
                Ok(())
            }
            Command::PrintConfig { config } => {
                let settings = Settings::load(config.as_deref())?;
                println!("{}", serde_json::to_string_pretty(&settings)?);
                Ok(())
            }
            Command::SignUrl { path, ttl, config } => {
                let settings = Settings::load(config.as_deref())?;
                println!("{}", sign_url(&settings, &path, ttl)?);
                Ok(())
            }
        }
    }
}

/// `path` (or a whole URL) signed for `ttl` with `http.play_secret`.
pub fn sign_url(
    settings: &Settings,
    path: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let plays = crate::auth::PlayAccess::new(&settings.http);
    let url = if path.contains("://") {
        path.to_owned()
    } else if path.starts_with('/') {
        format!(
            "{}://{}:{}{path}",
            settings.http.scheme(),
            settings.control.public_host,
            settings.http.listen.port()
        )
    } else {
        anyhow::bail!(
            "{path:?}: expected a path starting with / (e.g. /live/13800138000_1.flv) or a URL"
        );
    };
    let signed_path = crate::auth::play_url::path_of(&url).to_owned();
    plays
        .sign_for(&url, &signed_path, ttl)
        .context("http.play_secret is not set: plays are open, there is nothing to sign")
}

/// The argon2id PHC string of `line` without its line ending (default parameters:
/// 19 MiB, 2 passes, 1 lane; a fresh random salt).
pub fn hash_password(line: &str) -> anyhow::Result<String> {
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHasher, SaltString};
    let password = line.strip_suffix('\n').unwrap_or(line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "empty password on stdin");
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))?;
    Ok(hash.to_string())
}

async fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("--server {server}"))?
        .next()
        .with_context(|| format!("--server {server}: no address"))
}

/// A token cancelled on Ctrl-C or SIGTERM.
fn shutdown_on_ctrl_c() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    // Owned by the runtime for the life of the process: it only cancels the token.
    tokio::spawn(async move {
        wait_for_signal().await;
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    // No SIGTERM handler possible: Ctrl-C only.
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Every device and every viewer is a socket; the usual soft limit of 1024 open files
/// would refuse connections long before `ingest.max_connections`. Raise the soft limit as
/// far as the hard limit allows, and say so when that is still too low.
fn raise_open_files_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // each device may have a viewer or two; keep headroom for those and the broker
            let wanted = (max_connections as u64).saturating_mul(2);
            if limit < wanted {
                tracing::warn!(
                    limit,
                    wanted,
                    "open files limit is low for ingest.max_connections; raise it (ulimit -n)"
                );
            } else {
                tracing::debug!(limit, "open files limit");
            }
        }
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
}

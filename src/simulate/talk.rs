//! A device's side of a talk (JT/T 1078 real-time request with data type 2, two-way talk,
//! or 4, broadcast): connect where the REQPULL says, send the audio of the recording as the
//! cab's microphone (not for a broadcast), and decode what the gateway sends back, which a
//! WAV file keeps (what the driver heard), so tests and people can listen to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{PaceClock, Rewriter};
use crate::codec::audio::{PcmDecoder, TELEPHONY_RATE, without_hisilicon_header};
use crate::codec::jt1078::{DEFAULT_MAX_BODY, DataType, Decoder, Packet, PayloadType, Sim};
use crate::media::Codec;

/// Most audio a talk keeps for its WAV file: an hour at 8 kHz (bounded against a gateway
/// that never stops talking).
const MAX_SAMPLES: usize = 3600 * TELEPHONY_RATE as usize;

/// One talk of a simulated device.
#[derive(Debug, Clone)]
pub struct TalkDevice {
    /// The device's SIM.
    pub sim: Sim,
    /// The channel talked on.
    pub channel: u8,
    /// The recording whose audio is the cab's microphone (looped).
    pub packets: Arc<Vec<Packet>>,
    /// Broadcast (data type 4): the cab only listens.
    pub broadcast: bool,
    /// Where to write what the gateway sent, decoded (16-bit, 8 kHz, mono WAV).
    pub out: Option<PathBuf>,
}

/// What a talk carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TalkReport {
    /// Audio packets the device sent.
    pub sent: u64,
    /// Audio packets it received.
    pub received: u64,
    /// Samples those decoded to.
    pub samples: usize,
}

impl TalkDevice {
    /// Talks until the gateway closes the connection or `cancel`; then writes the WAV.
    pub async fn run(
        self,
        server: SocketAddr,
        cancel: CancellationToken,
    ) -> anyhow::Result<TalkReport> {
        let socket = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to {server}"))?;
        socket.set_nodelay(true)?;
        let (mut reader, mut writer) = socket.into_split();
        let mut report = TalkReport::default();
        let mut heard = Vec::new();
        let mut downlink = Downlink::default();
        let uplink = async {
            if self.broadcast {
                return std::future::pending::<anyhow::Result<u64>>().await;
            }
            self.uplink(&mut writer).await
        };
        tokio::pin!(uplink);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                sent = &mut uplink => {
                    report.sent = sent?;
                    break;
                }
                read = reader.read(&mut buf) => match read {
                    Ok(0) => break,
                    Ok(n) => downlink.push(buf.get(..n).unwrap_or_default(), &mut heard, &mut report),
                    Err(error) => {
                        warn!(%error, "talk connection failed");
                        break;
                    }
                },
            }
        }
        report.samples = heard.len();
        info!(
            received = report.received,
            samples = report.samples,
            "talk ended"
        );
        if let Some(path) = &self.out {
            write_wav(path, &heard)?;
        }
        Ok(report)
    }

    /// Sends the recording's audio, paced by its timestamps, looping; the packets sent.
    async fn uplink(&self, writer: &mut tokio::net::tcp::OwnedWriteHalf) -> anyhow::Result<u64> {
        let audio: Vec<Packet> = self
            .packets
            .iter()
            .filter(|p| p.data_type == DataType::Audio)
            .cloned()
            .collect();
        anyhow::ensure!(!audio.is_empty(), "the recording has no audio to talk with");
        let mut rewriter = Rewriter::new(self.sim, Some(self.channel));
        let mut clock = PaceClock::new(&audio);
        let mut sent = 0u64;
        let mut out = BytesMut::new();
        for round in 0.. {
            for packet in &audio {
                let packet = rewriter.rewrite(packet, clock.loop_shift(round));
                tokio::time::sleep_until(clock.due(&packet)).await;
                out.clear();
                packet.encode(&mut out);
                writer.write_all(&out).await?;
                sent += 1;
            }
        }
        Ok(sent)
    }
}

/// What the gateway sends on the talk connection, decoded to PCM.
#[derive(Default)]
struct Downlink {
    decoder: Option<Decoder>,
    pcm: Option<(PayloadType, PcmDecoder)>,
}

impl Downlink {
    fn push(&mut self, bytes: &[u8], heard: &mut Vec<i16>, report: &mut TalkReport) {
        let decoder = self
            .decoder
            .get_or_insert_with(|| Decoder::new(DEFAULT_MAX_BODY));
        decoder.push(bytes);
        while let Some(packet) = decoder.next_packet() {
            if packet.data_type != DataType::Audio {
                continue;
            }
            report.received += 1;
            let Some(format) = Codec::from(packet.payload_type).pcm_format() else {
                continue;
            };
            let pcm = match &mut self.pcm {
                Some((pt, pcm)) if *pt == packet.payload_type => pcm,
                _ => {
                    &mut self
                        .pcm
                        .insert((packet.payload_type, PcmDecoder::new(format)))
                        .1
                }
            };
            let body = without_hisilicon_header(&packet.body);
            if heard.len() < MAX_SAMPLES {
                if let Err(error) = pcm.decode(body, heard) {
                    warn!(%error, "talk audio not decoded");
                }
            }
        }
    }
}

/// Writes `samples` as a 16-bit 8 kHz mono WAV file.
fn write_wav(path: &std::path::Path, samples: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: TELEPHONY_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for sample in samples {
        wav.write_sample(*sample)?;
    }
    wav.finalize()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

//! Audio test helpers: ffmpeg quietly, 16-bit PCM from bytes, and the signal-to-noise
//! ratio the codec tests compare with.

use super::run;

/// Three tones, one of them swept in level: speech-like spectrum, 3 s at 8 kHz.
pub(crate) const SIGNAL: &str = "aevalsrc=0.3*sin(2*PI*440*t)+0.2*sin(2*PI*1300*t)*sin(2*PI*3*t)+0.1*sin(2*PI*2900*t):s=8000:d=3";

/// ffmpeg with `args`, quietly.
pub(crate) async fn ffmpeg(args: &[&str]) {
    let mut all = vec!["-v", "error", "-y"];
    all.extend(args);
    run("ffmpeg", &all).await;
}

/// 16-bit little-endian PCM as samples.
pub(crate) fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Signal-to-noise ratio (dB) of `ours` against `reference`, over the common length.
pub(crate) fn snr(reference: &[i16], ours: &[i16]) -> f64 {
    let n = reference.len().min(ours.len());
    let signal: f64 = reference[..n].iter().map(|s| f64::from(*s).powi(2)).sum();
    let noise: f64 = reference[..n]
        .iter()
        .zip(&ours[..n])
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-9)).log10()
}

//! G.711 A-law and µ-law (ITU-T G.711) to 16-bit PCM, through `audio-codec-algorithms`.

/// Appends the A-law samples of `payload` to `out`.
pub fn decode_alaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(
        payload
            .iter()
            .map(|b| audio_codec_algorithms::decode_alaw(*b)),
    );
}

/// Appends the µ-law samples of `payload` to `out`.
pub fn decode_ulaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(
        payload
            .iter()
            .map(|b| audio_codec_algorithms::decode_ulaw(*b)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_extremes_decode_to_the_g711_table() {
        let mut out = Vec::new();
        decode_alaw(&[0xd5, 0x55, 0xaa, 0x2a], &mut out);
        assert_eq!(out, vec![8, -8, 32256, -32256]);
        out.clear();
        decode_ulaw(&[0xff, 0x7f, 0x80, 0x00], &mut out);
        assert_eq!(out, vec![0, 0, 32124, -32124]);
    }
}

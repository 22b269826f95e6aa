//! Arbitrary access units through NAL splitting, SPS parsing, the check that a key slice
//! starts decoding and the FLV decoder configuration records: must never panic.
#![no_main]

use jt1078_codec::flv;
use jt1078_codec::h26x::{NalKind, VideoCodec, nal_units};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for codec in [VideoCodec::H264, VideoCodec::H265] {
        let _ = nal_units(data).count();
        let _ = codec.is_key_frame(data);
        if let Some(sps) = codec.find(data, NalKind::Sps) {
            if let Some(info) = codec.parse_sps(sps) {
                let _ = flv::avc_decoder_config(sps, sps, &info);
                let _ = flv::hevc_decoder_config(sps, sps, sps, &info);
            }
        }
        let nal = |kind| codec.find(data, kind).unwrap_or_default();
        let _ = codec.starts_decoding(nal(NalKind::Sps), nal(NalKind::Pps), nal(NalKind::KeySlice));
        let mut out = bytes::BytesMut::new();
        for signal in [flv::HevcSignal::CodecId12, flv::HevcSignal::Enhanced] {
            flv::write_video_frame(&mut out, (codec, signal), 0, true, data);
        }
        let _ = flv::tags(out.freeze()).count();
        let _ = flv::metadata_numbers(data);
    }
});

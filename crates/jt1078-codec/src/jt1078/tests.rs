//! Codec tests: round trips over every layout and data type, arbitrary read splits,
//! garbage, torn packets, gaps and caps.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn frame(
    layout: SimLayout,
    data_type: DataType,
    payload_type: PayloadType,
    len: usize,
    ts: u64,
) -> Frame {
    let sim = Sim::from_digits("13800138000", layout).unwrap();
    Frame {
        payload_type,
        data_type,
        sim,
        channel: 3,
        timestamp: data_type.has_timestamp().then_some(ts),
        last_iframe_interval: data_type.is_video().then_some(40),
        last_frame_interval: data_type.is_video().then_some(40),
        data: Bytes::from((0..len).map(|i| (i * 7 + len) as u8).collect::<Vec<_>>()),
    }
}

fn decode_all(bytes: &[u8], splits: &[usize]) -> (Vec<Frame>, Decoder, Reassembler) {
    let mut decoder = Decoder::default();
    let mut reassembler = Reassembler::default();
    let mut frames = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = splits.iter().map(|s| s % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    for cut in cuts {
        decoder.push(&bytes[at..cut]);
        at = cut;
        while let Some(packet) = decoder.next_packet() {
            frames.extend(reassembler.push(packet));
        }
    }
    (frames, decoder, reassembler)
}

fn encode_frames(frames: &[Frame], max_body: usize) -> BytesMut {
    let mut encoder = Encoder::with_max_body(max_body);
    let mut out = BytesMut::new();
    for f in frames {
        encoder.encode(f, &mut out);
    }
    out
}

fn data_type_strategy() -> impl Strategy<Value = DataType> {
    prop_oneof![
        Just(DataType::IFrame),
        Just(DataType::PFrame),
        Just(DataType::BFrame),
        Just(DataType::Audio),
        Just(DataType::Transparent),
    ]
}

fn layout_strategy() -> impl Strategy<Value = SimLayout> {
    prop_oneof![Just(SimLayout::Bcd6), Just(SimLayout::Bcd10)]
}

#[test]
fn packet_encode_decode_round_trips_every_layout_and_type() {
    for layout in [SimLayout::Bcd6, SimLayout::Bcd10] {
        for dt in [
            DataType::IFrame,
            DataType::PFrame,
            DataType::BFrame,
            DataType::Audio,
            DataType::Transparent,
        ] {
            let f = frame(layout, dt, PayloadType::H265, 100, 1_700_000_000_123);
            let packets = Encoder::new().packets(&f);
            let mut wire = BytesMut::new();
            for p in &packets {
                p.encode(&mut wire);
            }
            // several copies so the layout check can follow the chain
            let mut twice = BytesMut::new();
            for _ in 0..5 {
                twice.extend_from_slice(&wire);
            }
            let mut decoder = Decoder::default();
            decoder.push(&twice);
            let got = decoder.next_packet().unwrap();
            assert_eq!(got, packets[0], "{layout:?} {dt:?}");
            assert_eq!(decoder.layout(), Some(layout));
            assert_eq!(got.encoded_len(), layout.header_len(dt) + 100);
        }
    }
}

#[test]
fn audio_between_video_pieces_keeps_both_frames() {
    let video = frame(
        SimLayout::Bcd6,
        DataType::IFrame,
        PayloadType::H264,
        3000,
        1000,
    );
    let audio = frame(
        SimLayout::Bcd6,
        DataType::Audio,
        PayloadType::G711A,
        160,
        1000,
    );
    let mut encoder = Encoder::new();
    let mut vp = encoder.packets(&video);
    let ap = encoder.packets(&audio);
    // renumber so the shared counter stays continuous: v0 a v1 v2 v3
    let mut order = vec![vp.remove(0)];
    order.extend(ap);
    order.extend(vp);
    let mut wire = BytesMut::new();
    for (i, p) in order.iter_mut().enumerate() {
        p.sequence = i as u16;
        p.encode(&mut wire);
    }
    let (frames, _, r) = decode_all(&wire, &[]);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0], audio);
    assert_eq!(frames[1], video);
    assert_eq!(r.stats().broken_frames, 0);
}

#[test]
fn orphan_middle_and_last_are_dropped() {
    let video = frame(
        SimLayout::Bcd6,
        DataType::IFrame,
        PayloadType::H264,
        3000,
        1000,
    );
    let mut packets = Encoder::new().packets(&video);
    packets.remove(0);
    let mut wire = BytesMut::new();
    for p in &packets {
        p.encode(&mut wire);
    }
    let (frames, _, r) = decode_all(&wire, &[]);
    assert!(frames.is_empty());
    assert_eq!(r.stats().orphan_pieces, packets.len() as u64);
}

#[test]
fn sequence_gap_drops_frame_and_waits_for_key() {
    let i1 = frame(
        SimLayout::Bcd6,
        DataType::IFrame,
        PayloadType::H264,
        2000,
        0,
    );
    let p1 = frame(
        SimLayout::Bcd6,
        DataType::PFrame,
        PayloadType::H264,
        2000,
        40,
    );
    let p2 = frame(
        SimLayout::Bcd6,
        DataType::PFrame,
        PayloadType::H264,
        500,
        80,
    );
    let i2 = frame(
        SimLayout::Bcd6,
        DataType::IFrame,
        PayloadType::H264,
        500,
        120,
    );
    let mut encoder = Encoder::new();
    let mut packets: Vec<Packet> = [&i1, &p1, &p2, &i2]
        .iter()
        .flat_map(|f| encoder.packets(f))
        .collect();
    // lose the middle piece of p1 (packets: i1 x3, p1 x3, p2, i2)
    packets.remove(4);
    let mut wire = BytesMut::new();
    for p in &packets {
        p.encode(&mut wire);
    }
    let (frames, _, r) = decode_all(&wire, &[]);
    assert_eq!(frames, vec![i1, i2]);
    assert_eq!(r.stats().sequence_gaps, 1);
    assert_eq!(r.stats().skipped_waiting_for_key, 1);
}

#[test]
fn torn_packet_resyncs_on_marker() {
    let a = frame(SimLayout::Bcd6, DataType::PFrame, PayloadType::H264, 300, 0);
    let b = frame(SimLayout::Bcd6, DataType::Audio, PayloadType::G711A, 160, 0);
    let mut encoder = Encoder::new();
    let mut wire = BytesMut::new();
    let i = frame(SimLayout::Bcd6, DataType::IFrame, PayloadType::H264, 300, 0);
    encoder.encode(&i, &mut wire);
    let mut torn = BytesMut::new();
    encoder.encode(&a, &mut torn);
    wire.extend_from_slice(&torn[..torn.len() - 100]); // cut off
    encoder.encode(&b, &mut wire);
    encoder.encode(&b, &mut wire);
    let (frames, d, _) = decode_all(&wire, &[]);
    assert_eq!(frames.len(), 3, "I-frame and both audio frames survive");
    assert_eq!(frames[1], b);
    assert!(d.stats().resyncs >= 1);
}

#[test]
fn oversized_length_is_skipped_not_awaited() {
    let mut wire = BytesMut::new();
    let small = frame(SimLayout::Bcd6, DataType::IFrame, PayloadType::H264, 100, 0);
    for _ in 0..4 {
        Encoder::new().encode(&small, &mut wire);
    }
    let big = frame(
        SimLayout::Bcd6,
        DataType::IFrame,
        PayloadType::H264,
        20_000,
        0,
    );
    Encoder::with_max_body(20_000).encode(&big, &mut wire);
    Encoder::new().encode(&small, &mut wire);
    Encoder::new().encode(&small, &mut wire);
    let (frames, d, _) = decode_all(&wire, &[]);
    assert_eq!(d.stats().oversized, 1);
    assert_eq!(
        frames.len(),
        6,
        "the oversized packet is skipped, the rest decode"
    );
}

proptest! {
    #[test]
    fn any_split_of_the_stream_yields_the_same_frames(
        layout in layout_strategy(),
        specs in prop::collection::vec((data_type_strategy(), 0usize..4000), 1..12),
        max_body in 1usize..1200,
        splits in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut frames: Vec<Frame> = specs.iter().enumerate()
            .map(|(i, (dt, len))| frame(layout, *dt, PayloadType::H264, *len, i as u64 * 40))
            .collect();
        // the reassembler waits for an I-frame before any video
        frames.insert(0, frame(layout, DataType::IFrame, PayloadType::H264, 10, 0));
        let wire = encode_frames(&frames, max_body);
        let mut with_tail = wire.clone();
        // a device keeps sending: trailing audio lets layout detection finish on short streams
        let mut encoder = Encoder::with_max_body(max_body);
        let tail = frame(layout, DataType::Audio, PayloadType::G711A, 8, 0);
        for _ in 0..8 {
            encoder.encode(&tail, &mut with_tail);
        }
        let (mut got, d, r) = decode_all(&with_tail, &splits);
        got.truncate(frames.len());
        prop_assert_eq!(got, frames);
        prop_assert_eq!(d.stats().skipped_bytes, 0);
        prop_assert_eq!(r.stats().broken_frames, 0);
    }

    #[test]
    fn garbage_between_packets_never_loses_following_frames(
        garbage in prop::collection::vec(any::<u8>(), 0..300),
        splits in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let frames: Vec<Frame> = (0..4)
            .map(|i| frame(SimLayout::Bcd6, if i == 0 { DataType::IFrame } else { DataType::Audio }, PayloadType::G711A, 160, i * 20))
            .collect();
        let mut wire = BytesMut::new();
        let mut encoder = Encoder::new();
        encoder.encode(&frames[0], &mut wire);
        encoder.encode(&frames[1], &mut wire);
        wire.extend_from_slice(&garbage);
        encoder.encode(&frames[2], &mut wire);
        encoder.encode(&frames[3], &mut wire);
        encoder.encode(&frames[3], &mut wire);
        let (got, _, _) = decode_all(&wire, &splits);
        // the packet right before the garbage may be judged torn; the ones after survive
        prop_assert!(got.len() >= 3, "got {} frames", got.len());
        prop_assert_eq!(&got[got.len() - 2], &frames[3]);
    }

    #[test]
    fn truncated_streams_keep_every_complete_frame(cut in 0usize..20_000) {
        let frames: Vec<Frame> = (0..12)
            .map(|i| frame(SimLayout::Bcd6, if i % 4 == 0 { DataType::IFrame } else { DataType::PFrame }, PayloadType::H264, 1500, i * 40))
            .collect();
        let wire = encode_frames(&frames, 950);
        let cut = cut % (wire.len() + 1);
        let (got, d, _) = decode_all(&wire[..cut], &[]);
        // whatever arrives is a prefix of what was sent, and nothing waits beyond the cut
        prop_assert_eq!(&frames[..got.len()], &got[..]);
        prop_assert!(d.buffered() <= cut);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096), splits in prop::collection::vec(any::<usize>(), 0..8)) {
        let (_frames, d, _) = decode_all(&bytes, &splits);
        prop_assert!(d.buffered() <= bytes.len());
    }

    #[test]
    fn marker_rich_random_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..64)) {
        let mut bytes = Vec::new();
        for c in chunks {
            bytes.extend_from_slice(&FRAME_MARKER);
            bytes.extend_from_slice(&c);
        }
        let (_frames, d, _) = decode_all(&bytes, &[]);
        // a body is never awaited beyond the cap
        prop_assert!(d.buffered() <= DEFAULT_MAX_BODY + 64);
    }
}

//! Arbitrary bytes, cut into arbitrary reads, through the JT/T 1078 decoder and reassembler:
//! must never panic, and never buffer more than the body cap allows (see the bound below).
#![no_main]

use jt1078_codec::jt1078::{Decoder, Reassembler};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let read = usize::from(cut).max(1);
    let mut decoder = Decoder::new(2000);
    let mut reassembler = Reassembler::new(64 * 1024);
    for chunk in bytes.chunks(read) {
        decoder.push(chunk);
        while let Some(packet) = decoder.next_packet() {
            assert!(packet.body.len() <= 2000);
            let _ = reassembler.push(packet);
        }
        // Bounded by the body cap: one packet once the layout is known; before that, the
        // layout detection looks ahead along at most 8 packets (header ≤ 34 bytes).
        let bound = if decoder.layout().is_some() { 1 } else { 9 } * (34 + 2000) + read;
        assert!(decoder.buffered() <= bound, "{} > {bound}", decoder.buffered());
    }
});

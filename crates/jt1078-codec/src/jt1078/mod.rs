//! JT/T 1078 stream protocol (JT/T 1078-2016 §5.5, and the 20-digit-SIM variant).
//!
//! Sans-IO: [`Decoder`] turns bytes into [`Packet`]s, [`Reassembler`] turns packets into
//! whole [`Frame`]s, [`Encoder`] does the reverse for the simulator, [`TalkSender`] turns
//! the gateway's voice into a talk connection's audio packets. No sockets, clocks or
//! tasks here.

mod decoder;
mod encoder;
mod header;
mod packet;
mod reassembly;
mod sequence;
mod talk;

pub use decoder::{DEFAULT_MAX_BODY, Decoder, DecoderStats};
pub use encoder::Encoder;
pub use header::{
    DataType, FRAME_MARKER, PayloadType, STANDARD_MAX_BODY, Sim, SimLayout, Subpackage,
};
pub use packet::Packet;
pub use reassembly::{DEFAULT_MAX_FRAME, Frame, Reassembler, ReassemblyStats};
pub use sequence::ConnectionSequence;
pub use talk::{TalkFrame, TalkSender, payload_type as talk_payload_type};

#[cfg(test)]
mod tests;

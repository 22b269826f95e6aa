pub mod enc;
pub mod dec;

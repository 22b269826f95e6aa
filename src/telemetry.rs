//! Logging set-up: a tracing subscriber writing to stderr, filtered by `RUST_LOG` or
//! `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(with_quiet_crates(level)))
        .unwrap_or_else(|_| EnvFilter::new(with_quiet_crates("info")));
    // Err means a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colour codes only for a person at a terminal, never into a file or a pipe
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Crates that log their every step at `info` (the TURN client traces each poll), or warn
/// of every malformed STUN message (a datagram from anyone): quiet unless `RUST_LOG` or
/// `log.level` names them. Their failures reach the log through the gateway's own
/// warnings.
const QUIET_CRATES: [&str; 3] = ["turn_client_proto", "stun_proto", "stun_types"];

fn with_quiet_crates(level: &str) -> String {
    let mut filter = level.to_owned();
    for name in QUIET_CRATES.iter().filter(|name| !level.contains(*name)) {
        filter.push_str(&format!(",{name}=off"));
    }
    filter
}

//! Who may connect to the embedded broker: named users (argon2id hashes), devices (HMAC of
//! their id with `mqtt.device_secret`), anonymous clients (by `mqtt.allow_anonymous`) and
//! the gateway's own connections (a credential made at start-up, never written anywhere).
//! Also the pure state of the brute-force brake ([`Throttle`]) and of the once-a-minute
//! refusal log ([`RefusalLog`]). Sans-IO: time is an argument; the broker edge
//! (`control::broker`) sleeps and logs.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::access::{Identity, Principal, Role};
use crate::auth::is_loopback;
use crate::auth::secret::constant_time_eq;
use crate::config::{AllowAnonymous, MqttUser};
use crate::media::DeviceId;

/// User name of the gateway's own connections to its embedded broker.
pub const GATEWAY_USER: &str = "jt1078-gateway-internal";

/// Why a CONNECT was refused (the CONNACK code) and what the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// CONNACK 4: unknown user, wrong password, bad device HMAC.
    BadCredentials(&'static str),
    /// CONNACK 5: anonymous where it is not allowed, or too many failures.
    NotAuthorized(&'static str),
}

impl Refused {
    /// The reason, for the log.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::BadCredentials(reason) | Refused::NotAuthorized(reason) => reason,
        }
    }
}

/// A configuration error in `[mqtt]` users.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A `password_hash` that is not a PHC string.
    #[error(
        "mqtt.users[{index}] ({name:?}): password_hash is not an argon2 PHC string ($argon2id$v=19$…): {error}; make one with `jt1078-gateway hash-password`"
    )]
    BadHash {
        /// Position in the list.
        index: usize,
        /// User name.
        name: String,
        /// What the parser said.
        error: argon2::password_hash::Error,
    },
    /// Two users with one name.
    #[error("mqtt.users: the name {0:?} is listed twice")]
    Duplicate(String),
    /// An empty name.
    #[error("mqtt.users[{0}]: empty name")]
    EmptyName(usize),
}

struct User {
    /// The PHC string, checked to parse at start-up.
    hash: String,
    role: Role,
}

/// Decides CONNECTs. Shared by the broker's listeners.
pub struct Authenticator {
    users: HashMap<String, User>,
    device_secret: Option<Vec<u8>>,
    anonymous: AllowAnonymous,
    gateway_password: String,
    /// SHA-256 of passwords argon2 already accepted, per user: a reconnect storm of one
    /// backend costs one argon2 verification, not one per connection.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field(
                "device_secret",
                &self.device_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// From `[mqtt]`; `gateway_password` is the per-process credential of the gateway's
    /// own connections (user [`GATEWAY_USER`]).
    pub fn new(
        users: &[MqttUser],
        device_secret: &str,
        anonymous: AllowAnonymous,
        gateway_password: String,
    ) -> Result<Authenticator, AuthConfigError> {
        let mut map = HashMap::new();
        for (index, user) in users.iter().enumerate() {
            if user.name.is_empty() {
                return Err(AuthConfigError::EmptyName(index));
            }
            PasswordHash::new(user.password_hash.expose()).map_err(|error| {
                AuthConfigError::BadHash {
                    index,
                    name: user.name.clone(),
                    error,
                }
            })?;
            let entry = User {
                hash: user.password_hash.expose().to_owned(),
                role: user.role,
            };
            if map.insert(user.name.clone(), entry).is_some() {
                return Err(AuthConfigError::Duplicate(user.name.clone()));
            }
        }
        Ok(Authenticator {
            users: map,
            device_secret: (!device_secret.is_empty()).then(|| device_secret.as_bytes().to_vec()),
            anonymous,
            gateway_password,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this login is the gateway's own (checked before the brute-force brake, so
    /// that a guesser on the same host never delays the gateway).
    pub fn is_gateway(&self, username: Option<&str>, password: Option<&str>) -> bool {
        username == Some(GATEWAY_USER)
            && password
                .is_some_and(|p| constant_time_eq(p.as_bytes(), self.gateway_password.as_bytes()))
    }

    /// Decides a CONNECT from `peer`. A named user costs one argon2 verification the first
    /// time (tens of milliseconds: call it where blocking is fine); everything else is
    /// cheap.
    pub fn authenticate(
        &self,
        peer: IpAddr,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Identity, Refused> {
        let identity = |principal| Identity {
            principal,
            client_id: client_id.to_owned(),
        };
        let Some(name) = username.filter(|name| !name.is_empty()) else {
            return match self.anonymous {
                AllowAnonymous::Always => Ok(identity(Principal::Anonymous)),
                AllowAnonymous::Loopback if is_loopback(peer) => Ok(identity(Principal::Anonymous)),
                AllowAnonymous::Loopback => Err(Refused::NotAuthorized(
                    "anonymous client from outside loopback (mqtt.allow_anonymous = \"loopback\")",
                )),
                AllowAnonymous::Never => Err(Refused::NotAuthorized(
                    "anonymous client (mqtt.allow_anonymous = false)",
                )),
            };
        };
        let password = password.unwrap_or_default();
        if name == GATEWAY_USER {
            return if self.is_gateway(username, Some(password)) {
                Ok(identity(Principal::Gateway))
            } else {
                Err(Refused::BadCredentials(
                    "wrong password for the gateway's own user",
                ))
            };
        }
        if let Some(user) = self.users.get(name) {
            return if self.verify_user(name, user, password) {
                Ok(identity(Principal::User {
                    name: name.to_owned(),
                    role: user.role,
                }))
            } else {
                Err(Refused::BadCredentials("wrong password"))
            };
        }
        match (DeviceId::parse(name), &self.device_secret) {
            (Ok(device), Some(secret)) => {
                if verify_device(secret, &device, password) {
                    Ok(identity(Principal::Device(device)))
                } else {
                    Err(Refused::BadCredentials("wrong device password"))
                }
            }
            (Ok(_), None) => Err(Refused::BadCredentials(
                "device login but no mqtt.device_secret is set",
            )),
            (Err(_), _) => Err(Refused::BadCredentials("unknown user")),
        }
    }

    fn verify_user(&self, name: &str, user: &User, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|verified| verified.get(name).copied());
        if cached.is_some_and(|known| constant_time_eq(&known, &digest)) {
            return true;
        }
        // parsed at start-up: cannot fail here, and a failure refuses
        let Ok(hash) = PasswordHash::new(&user.hash) else {
            return false;
        };
        let ok = argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        if ok {
            if let Ok(mut verified) = self.verified.lock() {
                // bounded by the number of configured users
                verified.insert(name.to_owned(), digest);
            }
        }
        ok
    }
}

/// The password of device `device`: lowercase hex of HMAC-SHA256(key = `secret`,
/// message = the canonical id).
pub fn device_password(secret: &[u8], device: &DeviceId) -> String {
    hex(&device_mac(secret, device).finalize().into_bytes())
}

fn device_mac(secret: &[u8], device: &DeviceId) -> Hmac<Sha256> {
    #[expect(
        clippy::expect_used,
        reason = "HMAC takes a key of any length (a long one is hashed first)"
    )]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(device.as_str().as_bytes());
    mac
}

/// Checks a device's password in constant time.
fn verify_device(secret: &[u8], device: &DeviceId, password: &str) -> bool {
    let Some(bytes) = unhex(password) else {
        return false;
    };
    device_mac(secret, device).verify_slice(&bytes).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((digit(*hi)? << 4) | digit(*lo)?),
            _ => None,
        })
        .collect()
}

/// The unit the brake and the log count by: an IPv4 address, or an IPv6 /64 (one
/// subscriber's network: a guesser there has addresses to spare, not networks).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The brute-force brake, per address (IPv6: per /64) and user name: after
/// [`Throttle::FREE`] failures every further CONNECT of that user from that address (right
/// or wrong) waits for a slot; slots are spaced by a delay that doubles every
/// [`Throttle::DOUBLING`] failures, from 1 ms up to [`Throttle::MAX_DELAY`]. Slots are
/// handed out in turn, so parallel connections gain nothing: 1,000 wrong passwords take
/// about 40 s, the next thousand about half an hour. Failures are forgotten
/// [`Throttle::FORGET`] after the last one. Other addresses, and the other users of one
/// address (devices behind one carrier NAT, one of which keeps failing), never wait.
///
/// Guessing under ever new user names is braked per address: the first failures of each
/// name (those its own brake lets through) count for the address, which after
/// [`Throttle::ADDRESS_FREE`] of them waits for slots of its own, spaced by a delay that
/// doubles every [`Throttle::ADDRESS_DOUBLING`]: 1,000 names take minutes.
#[derive(Debug, Default)]
pub struct Throttle {
    by_login: HashMap<(IpAddr, String), Failures>,
    by_addr: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    next_slot: Instant,
}

impl Failures {
    fn new(now: Instant) -> Failures {
        Failures {
            count: 0,
            last: now,
            next_slot: now,
        }
    }

    /// Reserves the next slot once `free` failures were let through: how long to wait,
    /// or `None` past the longest queue.
    fn reserve(&mut self, now: Instant, free: u32, doubling: u32) -> Option<Duration> {
        if self.count < free {
            return Some(Duration::ZERO);
        }
        let start = self.next_slot.max(now);
        let wait = start - now;
        if wait > Throttle::MAX_QUEUE {
            return None;
        }
        self.next_slot = start + Throttle::spacing(self.count - free, doubling);
        Some(wait)
    }
}

/// What a CONNECT from a throttled address does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Wait this long, then decide.
    Wait(Duration),
    /// Too many queued already: refuse without looking at the credentials.
    Refuse,
}

impl Throttle {
    /// Failures a login has before it waits at all (typos).
    pub const FREE: u32 = 5;
    /// Failures over which the delay doubles.
    pub const DOUBLING: u32 = 128;
    /// First failures of distinct user names an address has before it waits.
    pub const ADDRESS_FREE: u32 = 200;
    /// Such failures over which the address's delay doubles.
    pub const ADDRESS_DOUBLING: u32 = 64;
    /// The longest delay between two attempts of one login.
    pub const MAX_DELAY: Duration = Duration::from_secs(10);
    /// Longest queue of waiting attempts of one login.
    pub const MAX_QUEUE: Duration = Duration::from_secs(60);
    /// Failures are forgotten this long after the last one.
    pub const FORGET: Duration = Duration::from_secs(600);
    /// Logins remembered before the forgotten ones are swept.
    const SWEEP_AT: usize = 65_536;
    /// Bytes of a user name kept in the key.
    const NAME_BYTES: usize = 64;

    fn key(ip: IpAddr, user: &str) -> (IpAddr, String) {
        let mut end = user.len().min(Self::NAME_BYTES);
        while !user.is_char_boundary(end) {
            end -= 1;
        }
        (bucket(ip), user.get(..end).unwrap_or_default().to_owned())
    }

    /// A CONNECT of `user` (empty: anonymous) from `ip` arrives at `now`: how long it
    /// waits (for its login's slot and its address's, whichever is later).
    pub fn admit(&mut self, ip: IpAddr, user: &str, now: Instant) -> Admission {
        let key = Self::key(ip, user);
        let login = match self.by_login.get_mut(&key) {
            Some(entry) if now.saturating_duration_since(entry.last) >= Self::FORGET => {
                self.by_login.remove(&key);
                Some(Duration::ZERO)
            }
            Some(entry) => entry.reserve(now, Self::FREE, Self::DOUBLING),
            None => Some(Duration::ZERO),
        };
        let address = match self.by_addr.get_mut(&key.0) {
            Some(entry) if now.saturating_duration_since(entry.last) >= Self::FORGET => {
                self.by_addr.remove(&key.0);
                Some(Duration::ZERO)
            }
            Some(entry) => entry.reserve(now, Self::ADDRESS_FREE, Self::ADDRESS_DOUBLING),
            None => Some(Duration::ZERO),
        };
        match (login, address) {
            (Some(login), Some(address)) => Admission::Wait(login.max(address)),
            _ => Admission::Refuse,
        }
    }

    /// A CONNECT of `user` from `ip` failed at `now`.
    pub fn failed(&mut self, ip: IpAddr, user: &str, now: Instant) {
        let key = Self::key(ip, user);
        if self.by_login.len() >= Self::SWEEP_AT && !self.by_login.contains_key(&key) {
            // keep the braked ones: a spray of fresh names must not free a guesser
            self.by_login.retain(|_, f| {
                f.count >= Self::FREE && now.saturating_duration_since(f.last) < Self::FORGET
            });
            if self.by_login.len() >= Self::SWEEP_AT {
                // that many braked logins: start afresh rather than grow
                self.by_login.clear();
            }
        }
        if self.by_addr.len() >= Self::SWEEP_AT && !self.by_addr.contains_key(&key.0) {
            self.by_addr
                .retain(|_, f| now.saturating_duration_since(f.last) < Self::FORGET);
            if self.by_addr.len() >= Self::SWEEP_AT {
                self.by_addr.clear();
            }
        }
        let address = key.0;
        let login = self.by_login.entry(key).or_insert(Failures::new(now));
        // a login's own brake lets its first failures through: those count for the address
        let counts_for_address = login.count < Self::FREE;
        login.count = login.count.saturating_add(1);
        login.last = now;
        if counts_for_address {
            let entry = self.by_addr.entry(address).or_insert(Failures::new(now));
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    /// The spacing of a login's attempts after `failures` failures.
    pub fn delay(failures: u32) -> Duration {
        Self::spacing(failures.saturating_sub(Self::FREE), Self::DOUBLING)
    }

    /// 1 ms doubling every `doubling` failures past the free ones, up to the longest.
    fn spacing(over: u32, doubling: u32) -> Duration {
        let micros = 1000.0 * 2f64.powf(f64::from(over) / f64::from(doubling.max(1)));
        Duration::from_micros(micros.min(Self::MAX_DELAY.as_micros() as f64) as u64)
    }
}

/// Refusals are logged once per address per minute, with how many were not.
#[derive(Debug, Default)]
pub struct RefusalLog {
    by_addr: HashMap<IpAddr, (Instant, u64)>,
}

impl RefusalLog {
    /// One line per address per this long.
    pub const PERIOD: Duration = Duration::from_secs(60);

    /// A refusal of `ip` at `now`: `Some(refusals not logged since the last line)` if
    /// this one is to be logged.
    pub fn record(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        let ip = bucket(ip);
        if self.by_addr.len() >= Throttle::SWEEP_AT {
            self.by_addr
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < Self::PERIOD);
        }
        match self.by_addr.get_mut(&ip) {
            Some((at, skipped)) if now.saturating_duration_since(*at) < Self::PERIOD => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let missed = *skipped;
                *at = now;
                *skipped = 0;
                Some(missed)
            }
            None => {
                self.by_addr.insert(ip, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use argon2::password_hash::{PasswordHasher, SaltString};

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn hash(password: &str) -> String {
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn auth(anonymous: AllowAnonymous) -> Authenticator {
        let users = [MqttUser {
            name: "backend".to_owned(),
            password_hash: Secret::new(hash("b-pass")),
            role: Role::Backend,
        }];
        Authenticator::new(&users, "s3cret", anonymous, "gw-pass".to_owned()).unwrap()
    }

    #[test]
    fn device_password_is_the_hmac_of_the_canonical_id() {
        let id = DeviceId::parse("013800138000").unwrap();
        // printf 13800138000 | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            device_password(b"s3cret", &id),
            "2cad9c7cfac6fec9c3f61a8f38ae62440a056af9fefe5e02a21c0955e05b3164"
        );
        let a = auth(AllowAnonymous::Never);
        let password = device_password(b"s3cret", &id);
        for name in ["13800138000", "013800138000"] {
            assert_eq!(
                a.authenticate(REMOTE, "c", Some(name), Some(&password))
                    .unwrap()
                    .principal,
                Principal::Device(id.clone())
            );
        }
        let other = device_password(b"s3cret", &DeviceId::parse("13900000000").unwrap());
        assert!(matches!(
            a.authenticate(REMOTE, "c", Some("13800138000"), Some(&other)),
            Err(Refused::BadCredentials(_))
        ));
        assert!(matches!(
            a.authenticate(
                REMOTE,
                "c",
                Some("13800138000"),
                Some(&password.to_uppercase())
            ),
            Err(Refused::BadCredentials(_))
        ));
    }

    #[test]
    fn users_anonymous_and_the_gateway() {
        let a = auth(AllowAnonymous::Loopback);
        let ok = a
            .authenticate(REMOTE, "c", Some("backend"), Some("b-pass"))
            .unwrap();
        assert_eq!(
            ok.principal,
            Principal::User {
                name: "backend".to_owned(),
                role: Role::Backend
            }
        );
        // again, from the cache
        assert!(
            a.authenticate(REMOTE, "c", Some("backend"), Some("b-pass"))
                .is_ok()
        );
        assert!(matches!(
            a.authenticate(REMOTE, "c", Some("backend"), Some("b-pasS")),
            Err(Refused::BadCredentials(_))
        ));
        assert!(matches!(
            a.authenticate(REMOTE, "c", Some("nobody"), Some("x")),
            Err(Refused::BadCredentials(_))
        ));
        assert_eq!(
            a.authenticate(LOOPBACK, "c", None, None).unwrap().principal,
            Principal::Anonymous
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(a.authenticate(mapped, "c", None, None).is_ok());
        assert!(matches!(
            a.authenticate(REMOTE, "c", None, None),
            Err(Refused::NotAuthorized(_))
        ));
        assert!(matches!(
            auth(AllowAnonymous::Never).authenticate(LOOPBACK, "c", None, None),
            Err(Refused::NotAuthorized(_))
        ));
        assert!(
            auth(AllowAnonymous::Always)
                .authenticate(REMOTE, "c", None, None)
                .is_ok()
        );
        assert_eq!(
            a.authenticate(REMOTE, "c", Some(GATEWAY_USER), Some("gw-pass"))
                .unwrap()
                .principal,
            Principal::Gateway
        );
        assert!(
            a.authenticate(REMOTE, "c", Some(GATEWAY_USER), Some(""))
                .is_err()
        );
    }

    #[test]
    fn a_bad_hash_names_the_user() {
        let users = [MqttUser {
            name: "x".to_owned(),
            password_hash: Secret::new("plain".to_owned()),
            role: Role::Admin,
        }];
        let error = Authenticator::new(&users, "", AllowAnonymous::Never, String::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("mqtt.users[0]") && error.contains("hash-password"),
            "{error}"
        );
    }

    #[test]
    fn thousand_failures_of_one_address_take_over_30_seconds_and_others_never_wait() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        let mut now = start;
        for _ in 0..1000 {
            match throttle.admit(REMOTE, "backend", now) {
                Admission::Wait(wait) => now += wait,
                Admission::Refuse => panic!("a serial guesser is queued, not refused"),
            }
            throttle.failed(REMOTE, "backend", now);
            assert_eq!(
                throttle.admit(REMOTE, "13800138000", now),
                Admission::Wait(Duration::ZERO)
            );
            assert_eq!(
                throttle.admit(LOOPBACK, "backend", now),
                Admission::Wait(Duration::ZERO)
            );
        }
        let took = now - start;
        assert!(
            (Duration::from_secs(30)..Duration::from_secs(60)).contains(&took),
            "{took:?}"
        );
        // parallel attempts queue up behind each other, and a long queue is refused
        let mut refused = false;
        for _ in 0..10_000 {
            if throttle.admit(REMOTE, "backend", now) == Admission::Refuse {
                refused = true;
                break;
            }
        }
        assert!(refused);
        // forgotten after a quiet while
        assert_eq!(
            throttle.admit(
                REMOTE,
                "backend",
                now + Throttle::FORGET + Throttle::MAX_QUEUE
            ),
            Admission::Wait(Duration::ZERO)
        );
        assert_eq!(Throttle::delay(1_000_000), Throttle::MAX_DELAY);
    }

    #[test]
    fn an_ipv6_guesser_gains_nothing_from_the_addresses_of_its_64() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for i in 0..Throttle::FREE + 1 {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            throttle.failed(ip, "u", now);
        }
        let fresh: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let _ = throttle.admit(fresh, "u", now);
        assert_ne!(
            throttle.admit(fresh, "u", now),
            Admission::Wait(Duration::ZERO)
        );
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            throttle.admit(elsewhere, "u", now),
            Admission::Wait(Duration::ZERO)
        );
    }

    #[test]
    fn a_thousand_fresh_names_from_one_address_take_over_30_seconds() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        let mut now = start;
        for n in 0..1000 {
            let user = format!("user{n}");
            match throttle.admit(REMOTE, &user, now) {
                Admission::Wait(wait) => now += wait,
                Admission::Refuse => panic!("a serial guesser is queued, not refused"),
            }
            throttle.failed(REMOTE, &user, now);
        }
        let took = now - start;
        assert!(took >= Duration::from_secs(30), "{took:?}");
        // another address does not wait
        assert_eq!(
            throttle.admit(LOOPBACK, "user1", now),
            Admission::Wait(Duration::ZERO)
        );
    }

    #[test]
    fn refusals_are_logged_once_a_minute_per_address() {
        let mut log = RefusalLog::default();
        let t = Instant::now();
        assert_eq!(log.record(REMOTE, t), Some(0));
        assert_eq!(log.record(REMOTE, t + Duration::from_secs(1)), None);
        assert_eq!(log.record(REMOTE, t + Duration::from_secs(2)), None);
        assert_eq!(log.record(LOOPBACK, t + Duration::from_secs(2)), Some(0));
        assert_eq!(log.record(REMOTE, t + Duration::from_secs(61)), Some(2));
    }

    proptest::proptest! {
        #[test]
        fn any_login_is_decided_without_a_panic(
            user in proptest::option::of(".*"),
            password in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..80)),
            client in ".*",
        ) {
            let a = auth(AllowAnonymous::Loopback);
            let password = password.map(|p| String::from_utf8_lossy(&p).into_owned());
            for peer in [LOOPBACK, REMOTE] {
                let _ = a.authenticate(peer, &client, user.as_deref(), password.as_deref());
            }
        }
    }
}

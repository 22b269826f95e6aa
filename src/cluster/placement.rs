//! Who owns a stream that is live nowhere: weighted rendezvous (highest random weight)
//! hashing of the device id over the live members, so one device's channels land on one
//! gateway, every gateway computes the same answer from the same member list, and a member
//! joining or leaving moves only the devices it wins or held (about 1/n of them).
//!
//! The weight follows Schindelhauer and Schomaker's weighted distributed hash tables: each
//! member draws `u` uniform in (0, 1) from a hash of (member, device) and scores
//! `-weight / ln(u)`; the highest score wins, and a member of weight 2 wins twice as often
//! as one of weight 1. The hash is SHA-256 (specified, so gateways of different builds and
//! versions agree; `std`'s hasher is not stable across Rust releases).

use sha2::{Digest, Sha256};

/// The member that owns `device` among `members` (id and weight; a weight of 0 counts as
/// 1): `None` when there is none. Ties (practically impossible) go to the smaller id.
pub fn owner_of<'a, I>(device: &str, members: I) -> Option<&'a str>
where
    I: IntoIterator<Item = (&'a str, u32)>,
{
    members
        .into_iter()
        .map(|(id, weight)| (score(id, weight, device), id))
        .max_by(|(a, a_id), (b, b_id)| a.total_cmp(b).then_with(|| b_id.cmp(a_id)))
        .map(|(_, id)| id)
}

/// The member's score for `device`.
fn score(member: &str, weight: u32, device: &str) -> f64 {
    let mut hash = Sha256::new();
    hash.update(member.as_bytes());
    // a separator no id contains, so ("ab", "c") and ("a", "bc") differ
    hash.update([0]);
    hash.update(device.as_bytes());
    let digest = hash.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    // uniform in (0, 1): 53 bits (an f64's mantissa), never 0 or 1
    let bits = u64::from_be_bytes(top) >> 11;
    let u = (bits as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(n: u64) -> Vec<String> {
        (0..n).map(|i| (13_800_000_000 + i).to_string()).collect()
    }

    fn shares(members: &[(&str, u32)], devices: &[String]) -> Vec<usize> {
        let mut counts = vec![0; members.len()];
        for device in devices {
            let owner = owner_of(device, members.iter().copied()).unwrap();
            let at = members.iter().position(|(id, _)| *id == owner).unwrap();
            counts[at] += 1;
        }
        counts
    }

    #[test]
    fn every_member_gets_its_share_and_a_weight_counts() {
        let devices = devices(30_000);
        let even = shares(&[("gw-a", 1), ("gw-b", 1), ("gw-c", 1)], &devices);
        for count in &even {
            // 10,000 each within 3 % (the binomial's sd is ~82)
            assert!((9_700..=10_300).contains(count), "{even:?}");
        }
        let weighted = shares(&[("gw-a", 2), ("gw-b", 1), ("gw-c", 1)], &devices);
        assert!((14_500..=15_500).contains(&weighted[0]), "{weighted:?}");
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_devices_and_one_joining_takes_only_what_it_wins() {
        let devices = devices(10_000);
        let three = [("gw-a", 1), ("gw-b", 1), ("gw-c", 1)];
        let two = [("gw-a", 1), ("gw-b", 1)];
        for device in &devices {
            let before = owner_of(device, three).unwrap();
            let after = owner_of(device, two).unwrap();
            // a device gw-c did not hold stays where it was
            if before != "gw-c" {
                assert_eq!(before, after, "{device}");
            }
            // and with gw-c back, a device moves only to gw-c
            let again = owner_of(device, three).unwrap();
            assert!(again == after || again == "gw-c", "{device}");
        }
    }

    #[test]
    fn the_answer_is_the_same_in_any_order_and_none_without_members() {
        let members = [("gw-a", 1), ("gw-b", 3), ("gw-c", 1)];
        let mut reversed = members;
        reversed.reverse();
        for device in devices(500) {
            assert_eq!(owner_of(&device, members), owner_of(&device, reversed));
        }
        assert_eq!(owner_of("13800138000", []), None);
    }
}

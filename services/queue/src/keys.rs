//! Where herd's Redis keys live. Keys one script or command touches together share a hash tag
//! (the part in braces), so a Redis Cluster keeps them on one slot: the turn stream of a
//! partition and the dedup keys of the messages it takes (`{<partition>}`); the active-user
//! sketches, whose unions span tenants and days (`{active}`).

/// The partition (of `partitions`) of a conversation key: FNV-1a, stable across processes and
/// versions, so every gateway sends one conversation's messages to one stream, in order.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// The conversation key of a sender on a channel (`channel_id:sender`).
pub fn conversation_key(channel_id: i64, sender: &str) -> String {
    format!("{channel_id}:{sender}")
}

/// The turn stream of partition `p`.
pub fn stream(prefix: &str, p: u32) -> String {
    format!("{prefix}:turns:{{{p}}}")
}

/// The dedup key of a platform message that went to partition `p`.
pub fn seen(prefix: &str, p: u32, platform: &str, message_id: &str) -> String {
    format!("{prefix}:seen:{{{p}}}:{platform}:{message_id}")
}

/// An active-user sketch (`kind` is `mau` or `dau`).
pub fn active(prefix: &str, kind: &str, tenant_id: i64, period: &str) -> String {
    format!("{prefix}:{{active}}:{kind}:{tenant_id}:{period}")
}

/// The one turn stream of herd before partitions (adopted at start-up: see `Queue::connect`).
pub fn legacy_stream(prefix: &str) -> String {
    format!("{prefix}:turns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: a change here would send conversations to other streams mid-flight.
        assert_eq!(partition_of("1:15550001", 1), 0);
        assert_eq!(partition_of("1:15550001", 8), 5);
        assert_eq!(partition_of("42:447700900123", 16), 8);
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[partition_of(&conversation_key(7, &format!("1555{i:07}")), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
    }

    #[test]
    fn keys_a_script_shares_have_one_tag() {
        let tag = |k: &str| k[k.find("{").expect("tag")..=k.find("}").expect("tag")].to_string();
        assert_eq!(tag(&stream("herd", 3)), tag(&seen("herd", 3, "whatsapp", "wamid.x")));
        assert_ne!(tag(&stream("herd", 3)), tag(&stream("herd", 4)));
        assert_eq!(tag(&active("herd", "mau", 1, "2026-12")), tag(&active("herd", "dau", 2, "2026-12-05")));
    }
}

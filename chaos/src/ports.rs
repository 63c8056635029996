//! Loopback ports for processes that are told their port before they start.
//!
//! A store member is given its peer address on its command line (the other members
//! must know it), so the harness picks a port, releases it, and passes it on. Picking by
//! binding port 0 races: the kernel hands the same ephemeral ports to outgoing
//! connections and to other processes binding port 0, and one of them may take the port
//! between the release and the member's bind ("Address already in use").
//!
//! [`free_port`] closes both gaps:
//! - it picks below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where
//!   the kernel never assigns a port on its own;
//! - it reserves the port among pickers with an advisory lock on a file named after the
//!   port (in the temporary directory), held for the rest of this process's life, so
//!   two test processes never pick the same port. The kernel drops the lock when the
//!   process exits, however it exits.
//!
//! Left out: a process outside the harness binding a fixed port in that range could
//! still take one; the pick also checks the port binds right now.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

/// The lowest port picked: above the well-known and most registered service ports.
const PORT_MIN: u16 = 10_000;
/// How many candidates one pick tries before giving up.
const TRIES_MAX: usize = 4_096;

/// Locks on the ports this process picked; kept until the process exits.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A TCP port on `ip` (a loopback address) that binds now, lies outside the kernel's
/// ephemeral range and no other process using this function holds.
pub fn free_port(ip: Ipv4Addr) -> std::io::Result<u16> {
    let (low, high) = candidate_range();
    let span = usize::from(high - low) + 1;
    let dir = lock_dir()?;
    let mut next = usize::from(start_offset()) % span;
    for _ in 0..TRIES_MAX.min(span) {
        let port = low + u16::try_from(next).expect("an offset within a u16 range");
        next = (next + 1) % span;
        let lock = File::create(dir.join(format!("{ip}-{port}")))?;
        if lock.try_lock().is_err() {
            continue; // Another process holds it.
        }
        if TcpListener::bind((ip, port)).is_err() {
            continue; // Something outside the pickers has it; the lock goes with `lock`.
        }
        HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(lock);
        return Ok(port);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no free port on {ip} between {low} and {high} after {TRIES_MAX} tries"),
    ))
}

/// The ports below the kernel's ephemeral range, or above it when it starts too low.
fn candidate_range() -> (u16, u16) {
    let (eph_low, eph_high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if eph_low > PORT_MIN + 1_000 {
        (PORT_MIN, eph_low - 1)
    } else {
        (eph_high.saturating_add(1).min(u16::MAX - 1), u16::MAX)
    }
}

fn lock_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join("capstan-ports");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Where this pick starts: differs between processes and between picks, so pickers
/// rarely contend for the same lock.
fn start_offset() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() % u64::from(u16::MAX)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_distinct_outside_the_ephemeral_range_and_bindable() {
        let (low, high) = candidate_range();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let port = free_port(Ipv4Addr::LOCALHOST).expect("a port");
            assert!((low..=high).contains(&port), "{port} outside {low}..={high}");
            assert!(seen.insert(port), "port {port} picked twice");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the picked port binds");
        }
    }
}

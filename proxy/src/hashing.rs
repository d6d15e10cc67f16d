//! A cheap hash for maps keyed by what operators configured (route and policy names, upstream
//! URLs, internal sequence numbers), never by what clients send: SipHash, the standard map's
//! default, costs ~250 instructions a lookup and is only needed where an attacker picks the
//! keys (HashDoS). Maps keyed by client input (IPs, key ids) keep the default hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by configuration.
pub(crate) type ConfigMap<K, V> = HashMap<K, V, BuildHasherDefault<ConfigHasher>>;

/// FNV-1a over bytes; a single `u64` (a sequence number) by one multiplication.
#[derive(Default)]
pub(crate) struct ConfigHasher(u64);

impl Hasher for ConfigHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

//! Counting distinct things in bounded memory: exact for small sets, HyperLogLog above that.
//! Merging is order-independent, so a map built in parallel is the same as one built serially.

use std::net::IpAddr;

/// Exact up to this many distinct items (1 KiB of hashes), then HyperLogLog.
const EXACT_MAX: usize = 128;
/// HyperLogLog precision: 2^10 one-byte registers (1 KiB), about 3% standard error.
const PRECISION: u32 = 10;
const REGISTERS: usize = 1 << PRECISION;

/// A distinct counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distinct {
    exact: Vec<u64>,
    registers: Option<Box<[u8; REGISTERS]>>,
    /// Counts of disjoint sets counted elsewhere (rows of a query result), added as they are.
    counted: u64,
}

impl Distinct {
    /// Adds an item by its 64-bit hash (use [`hash_endpoint`] or [`hash_u64`]).
    pub fn insert(&mut self, hash: u64) {
        if let Some(registers) = self.registers.as_deref_mut() {
            add_register(registers, hash);
            return;
        }
        // Sorted, so a repeat (most records of a connection) costs a binary search.
        if let Err(at) = self.exact.binary_search(&hash) {
            self.exact.insert(at, hash);
            if self.exact.len() > EXACT_MAX {
                self.promote();
            }
        }
    }

    fn promote(&mut self) {
        let mut registers = Box::new([0u8; REGISTERS]);
        for &hash in &self.exact {
            add_register(&mut registers, hash);
        }
        self.exact = Vec::new();
        self.registers = Some(registers);
    }

    /// A set counted elsewhere, exactly, and known to be disjoint from any other it is merged with.
    pub fn from_count(count: u64) -> Self {
        Self { counted: count, ..Self::default() }
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Distinct) {
        self.counted += other.counted;
        match other.registers.as_deref() {
            Some(theirs) => {
                if self.registers.is_none() {
                    self.promote();
                }
                if let Some(ours) = self.registers.as_deref_mut() {
                    for (a, b) in ours.iter_mut().zip(theirs.iter()) {
                        *a = (*a).max(*b);
                    }
                }
            }
            None => {
                for &hash in &other.exact {
                    self.insert(hash);
                }
            }
        }
    }

    /// Whether the count is exact.
    pub fn is_exact(&self) -> bool {
        self.registers.is_none()
    }

    /// The number of distinct items (an estimate once above the exact limit).
    pub fn count(&self) -> u64 {
        self.counted + self.sketch_count()
    }

    fn sketch_count(&self) -> u64 {
        let Some(registers) = self.registers.as_deref() else {
            return self.exact.len() as u64;
        };
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0u32;
        for &r in registers.iter() {
            sum += 1.0 / f64::from(1u32 << r.min(31));
            if r == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 { m * (m / f64::from(zeros)).ln() } else { raw };
        // Never report fewer than the exact phase had already proven.
        (estimate.round() as u64).max(EXACT_MAX as u64 + 1)
    }
}

fn add_register(registers: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> (64 - PRECISION)) as usize;
    let rest = (hash << PRECISION) | (1 << (PRECISION - 1));
    let rank = rest.leading_zeros() as u8 + 1;
    if let Some(r) = registers.get_mut(index) {
        *r = (*r).max(rank);
    }
}

/// A fixed (unseeded) 64-bit mixer: the same input hashes the same in every run.
pub fn hash_u64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes an address and port (a connection's client end).
pub fn hash_endpoint(addr: IpAddr, port: u16) -> u64 {
    let (hi, lo) = match addr {
        IpAddr::V4(v4) => (0, u64::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            ((bits >> 64) as u64 | 1, bits as u64)
        }
    };
    hash_u64(hash_u64(hi ^ (u64::from(port) << 48)) ^ lo)
}

/// Hashes a string, for identifiers such as interface ids.
pub fn hash_str(s: &str) -> u64 {
    hash_bytes(s.as_bytes())
}

/// Hashes bytes, for identifiers as they appear in a record.
pub fn hash_bytes(s: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ s.len() as u64;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail.get_mut(..words.remainder().len()).unwrap_or_default().copy_from_slice(words.remainder());
    hash_u64(h ^ u64::from_le_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_small_sets() {
        let mut d = Distinct::default();
        for i in 0..100u64 {
            d.insert(hash_u64(i % 50));
        }
        assert_eq!(d.count(), 50);
        assert!(d.is_exact());
    }

    #[test]
    fn estimates_large_sets_within_a_few_percent() {
        for n in [1_000u64, 20_000, 300_000] {
            let mut d = Distinct::default();
            for i in 0..n {
                d.insert(hash_u64(i));
            }
            let error = (d.count() as f64 - n as f64).abs() / n as f64;
            assert!(error < 0.08, "n={n} count={} error={error}", d.count());
        }
    }

    #[test]
    fn merge_is_order_independent() {
        let (mut a, mut b) = (Distinct::default(), Distinct::default());
        for i in 0..100 {
            a.insert(hash_u64(i));
        }
        for i in 50..400 {
            b.insert(hash_u64(i));
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        let mut serial = Distinct::default();
        for i in 0..400 {
            serial.insert(hash_u64(i));
        }
        assert_eq!(ab, serial);
    }

    #[test]
    fn endpoint_hashes_differ() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::a00:1".parse().unwrap();
        assert_ne!(hash_endpoint(a, 1), hash_endpoint(a, 2));
        assert_ne!(hash_endpoint(a, 1), hash_endpoint(b, 1));
        assert_ne!(hash_str("eni-1"), hash_str("eni-2"));
    }
}

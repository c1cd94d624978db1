//! Consistent hashing on a ring of virtual nodes: a target that leaves moves
//! only the keys it owned; everyone else's keys stay put.

/// Virtual nodes per unit of weight; enough for an even spread of a few targets.
const POINTS_PER_WEIGHT: u32 = 100;

#[derive(Debug)]
pub struct Ring {
    /// (point, target index), sorted by point.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// `targets` are (stable identity, weight); the identity places its points.
    pub fn new<'a>(targets: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut points = Vec::new();
        for (index, (identity, weight)) in targets.into_iter().enumerate() {
            for replica in 0..weight * POINTS_PER_WEIGHT {
                points.push((hash(format!("{identity}#{replica}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The owner of `key`: the first usable target clockwise from its hash.
    pub fn pick(&self, key: &[u8], usable: impl Fn(usize) -> bool) -> Option<usize> {
        let h = hash(key);
        let start = self.points.partition_point(|&(p, _)| p < h);
        let len = self.points.len();
        (0..len)
            .map(|step| self.points[(start + step) % len].1)
            .find(|&target| usable(target))
    }
}

/// FNV-1a with a murmur3 finaliser: stable across builds and machines, so
/// every gateway instance sends a key to the same target.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(ring: &Ring, usable: impl Fn(usize) -> bool + Copy) -> Vec<Option<usize>> {
        (0..2000)
            .map(|k| ring.pick(format!("user-{k}").as_bytes(), usable))
            .collect()
    }

    #[test]
    fn spreads_keys_roughly_by_weight() {
        let ring = Ring::new([("a:1", 1), ("b:1", 1), ("c:1", 2)]);
        let all = owners(&ring, |_| true);
        let share = |t| all.iter().filter(|o| **o == Some(t)).count();
        assert!((300..700).contains(&share(0)), "{}", share(0));
        assert!((300..700).contains(&share(1)), "{}", share(1));
        assert!((700..1300).contains(&share(2)), "{}", share(2));
    }

    #[test]
    fn a_leaving_target_moves_only_its_own_keys() {
        let ring = Ring::new([("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        let before = owners(&ring, |_| true);
        let after = owners(&ring, |t| t != 1);
        for (b, a) in before.iter().zip(&after) {
            if *b != Some(1) {
                assert_eq!(a, b, "a key not owned by the leaving target moved");
            } else {
                assert_ne!(*a, Some(1));
            }
        }
    }
}

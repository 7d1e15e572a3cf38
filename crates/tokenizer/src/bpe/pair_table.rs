//! The pair → rank lookup of the merge loop: an open-addressing table (linear probing, load at
//! most 1/2) of 12-byte slots, so a lookup is one hash and usually one cache line, where a
//! general-purpose map reads a control byte group and then the bucket.

/// A pair that is never a merge (ids are far below `u32::MAX`), marking empty slots.
const EMPTY: u32 = u32::MAX;
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug, Clone, Copy)]
struct Slot {
    left: u32,
    right: u32,
    rank: u32,
}

/// Pair of ids → merge rank.
#[derive(Debug, Clone)]
pub(crate) struct PairTable {
    slots: Vec<Slot>,
    shift: u32,
}

impl PairTable {
    /// Builds the table from merges in rank order; the first occurrence of a pair wins.
    pub(crate) fn new(merges: &[(u32, u32)]) -> PairTable {
        let bits = (merges.len() * 2)
            .max(16)
            .next_power_of_two()
            .trailing_zeros();
        let mut table = PairTable {
            slots: vec![
                Slot {
                    left: EMPTY,
                    right: EMPTY,
                    rank: EMPTY,
                };
                1 << bits
            ],
            shift: 64 - bits,
        };
        let mask = table.slots.len() - 1;
        for (rank, &(left, right)) in merges.iter().enumerate() {
            if left == EMPTY {
                continue; // cannot be a valid id; never looked up as a pair
            }
            let mut i = table.first_slot(left, right);
            loop {
                let slot = &mut table.slots[i];
                if slot.left == EMPTY {
                    *slot = Slot {
                        left,
                        right,
                        rank: rank as u32,
                    };
                    break;
                }
                if slot.left == left && slot.right == right {
                    break; // a repeated pair keeps its first (lowest) rank
                }
                i = (i + 1) & mask;
            }
        }
        table
    }

    #[inline(always)]
    fn first_slot(&self, left: u32, right: u32) -> usize {
        let key = (u64::from(left) << 32) | u64::from(right);
        let h = key.wrapping_mul(MUL);
        ((h ^ (h >> 31)).wrapping_mul(MUL) >> self.shift) as usize
    }

    /// The rank of the merge `(left, right)`, or `u32::MAX` if there is none.
    #[inline]
    pub(crate) fn get(&self, left: u32, right: u32) -> u32 {
        let mask = self.slots.len() - 1;
        let mut i = self.first_slot(left, right);
        loop {
            let slot = self.slots[i];
            if slot.left == left && slot.right == right {
                return slot.rank;
            }
            if slot.left == EMPTY {
                return EMPTY;
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_match_a_hash_map() {
        let mut rng = chatforge_data::Rng::new(5);
        let mut merges = Vec::new();
        let mut reference = std::collections::HashMap::new();
        for rank in 0..5000u32 {
            let pair = (rng.below(300) as u32, rng.below(300) as u32);
            merges.push(pair);
            reference.entry(pair).or_insert(rank);
        }
        let table = PairTable::new(&merges);
        for l in 0..300 {
            for r in 0..300 {
                let expect = reference.get(&(l, r)).copied().unwrap_or(EMPTY);
                assert_eq!(table.get(l, r), expect, "({l}, {r})");
            }
        }
        assert_eq!(table.get(EMPTY, EMPTY), EMPTY);
        assert_eq!(PairTable::new(&[]).get(1, 2), EMPTY);
    }
}

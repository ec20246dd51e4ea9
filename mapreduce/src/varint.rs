//! LEB128 variable-length integers, as record framing in map output and
//! sequence files uses them.

/// Appends `v`.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes one from the front of `b`: the value and the bytes it took;
/// `None` if `b` ends inside it or it is longer than 10 bytes.
#[inline]
pub fn get(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Bytes `v` takes.
pub fn len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_sizes() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            super::put(&mut b, v);
            assert_eq!(b.len(), super::len(v), "{v}");
            assert_eq!(super::get(&b), Some((v, b.len())));
            assert_eq!(super::get(&b[..b.len() - 1]), None);
        }
    }
}

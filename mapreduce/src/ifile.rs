//! The map-output file format (Hadoop's IFile, in our own encoding). A
//! map's output is one file holding one *segment* per reduce partition,
//! back to back, and an index file saying where each segment is. A
//! segment is a run of blocks, each `[raw length u32][stored length u32,
//! top bit = lz4][stored bytes]`, holding whole records `[key length
//! varint][value length varint][key][value]` sorted by key. The index
//! keeps each segment's CRC32C over its stored bytes, checked by whoever
//! reads the segment (a reduce after the shuffle), so a damaged map output
//! is found and the map re-run, never merged.

use std::io::{self, Read, Write};
use std::path::Path;

use hstack_daemon::format::Format;

use crate::varint;

/// Raw bytes of records gathered before a block is written.
pub const BLOCK: usize = 64 << 10;
const LZ4_FLAG: u32 = 1 << 31;

pub const INDEX: Format = Format {
    magic: *b"HSTKMIDX",
    what: "map output index",
    version: 1,
    oldest: 1,
};

/// Where one partition's records are in a map-output file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentInfo {
    pub offset: u64,
    /// Bytes of the records, uncompressed.
    pub raw_len: u64,
    /// Bytes on disk (what a fetch moves).
    pub part_len: u64,
    pub records: u64,
    pub crc: u32,
}

/// Writes one segment into `w`, which may hold others before and after.
pub struct SegmentWriter<'a, W: Write> {
    w: &'a mut W,
    compress: bool,
    block: Vec<u8>,
    scratch: Vec<u8>,
    info: SegmentInfo,
}

impl<'a, W: Write> SegmentWriter<'a, W> {
    /// `offset`: where in the file the segment starts.
    pub fn new(w: &'a mut W, offset: u64, compress: bool) -> Self {
        Self {
            w,
            compress,
            block: Vec::with_capacity(BLOCK + 1024),
            scratch: Vec::new(),
            info: SegmentInfo {
                offset,
                crc: 0,
                ..Default::default()
            },
        }
    }

    #[inline]
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        varint::put(&mut self.block, key.len() as u64);
        varint::put(&mut self.block, value.len() as u64);
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(value);
        self.info.records += 1;
        if self.block.len() >= BLOCK {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let raw = self.block.len() as u32;
        let mut stored: &[u8] = &self.block;
        let mut flag = 0;
        if self.compress {
            self.scratch.resize(
                lz4_flex::block::get_maximum_output_size(self.block.len()),
                0,
            );
            let n = lz4_flex::block::compress_into(&self.block, &mut self.scratch)
                .map_err(io::Error::other)?;
            if n < self.block.len() {
                stored = &self.scratch[..n];
                flag = LZ4_FLAG;
            }
        }
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&raw.to_le_bytes());
        head[4..].copy_from_slice(&(stored.len() as u32 | flag).to_le_bytes());
        self.info.crc = crc32c::crc32c_append(self.info.crc, &head);
        self.info.crc = crc32c::crc32c_append(self.info.crc, stored);
        self.w.write_all(&head)?;
        self.w.write_all(stored)?;
        self.info.raw_len += u64::from(raw);
        self.info.part_len += 8 + stored.len() as u64;
        self.block.clear();
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<SegmentInfo> {
        self.flush_block()?;
        Ok(self.info)
    }
}

fn damaged(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("map output is damaged: {what}"),
    )
}

/// Reads one segment's records.
pub struct SegmentReader<R: Read> {
    r: R,
    /// Stored bytes of the segment not read yet.
    left: u64,
    want_crc: u32,
    crc: u32,
    raw: Vec<u8>,
    stored: Vec<u8>,
    pos: usize,
    k: (usize, usize),
    v: (usize, usize),
    /// Raw bytes decoded so far (progress).
    pub raw_read: u64,
}

impl<R: Read> SegmentReader<R> {
    /// `r` is positioned at the segment's first byte.
    pub fn new(r: R, info: &SegmentInfo) -> Self {
        Self {
            r,
            left: info.part_len,
            want_crc: info.crc,
            crc: 0,
            raw: Vec::new(),
            stored: Vec::new(),
            pos: 0,
            k: (0, 0),
            v: (0, 0),
            raw_read: 0,
        }
    }

    fn read_block(&mut self) -> io::Result<()> {
        if self.left < 8 {
            return Err(damaged(format!("{} stray bytes at its end", self.left)));
        }
        let mut head = [0u8; 8];
        self.r.read_exact(&mut head)?;
        let raw = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
        let stored_word = u32::from_le_bytes(head[4..].try_into().expect("4"));
        let stored = (stored_word & !LZ4_FLAG) as usize;
        if stored as u64 > self.left - 8 || raw > 1 << 30 {
            return Err(damaged("a block longer than its segment"));
        }
        self.crc = crc32c::crc32c_append(self.crc, &head);
        self.left -= 8 + stored as u64;
        if stored_word & LZ4_FLAG != 0 {
            self.stored.resize(stored, 0);
            self.r.read_exact(&mut self.stored)?;
            self.crc = crc32c::crc32c_append(self.crc, &self.stored);
            self.raw.resize(raw, 0);
            let n = lz4_flex::block::decompress_into(&self.stored, &mut self.raw)
                .map_err(|e| damaged(format!("lz4: {e}")))?;
            if n != raw {
                return Err(damaged("a block shorter than it says"));
            }
        } else {
            if stored != raw {
                return Err(damaged("an uncompressed block of two lengths"));
            }
            self.raw.resize(raw, 0);
            self.r.read_exact(&mut self.raw)?;
            self.crc = crc32c::crc32c_append(self.crc, &self.raw);
        }
        self.pos = 0;
        self.raw_read += raw as u64;
        if self.left == 0 && self.crc != self.want_crc {
            return Err(damaged(format!(
                "checksum {:08x}, expected {:08x}",
                self.crc, self.want_crc
            )));
        }
        Ok(())
    }

    /// Moves to the next record; false at the end.
    #[inline]
    pub fn next_record(&mut self) -> io::Result<bool> {
        while self.pos >= self.raw.len() {
            if self.left == 0 {
                return Ok(false);
            }
            self.read_block()?;
        }
        let b = &self.raw[self.pos..];
        let (kl, a) = varint::get(b).ok_or_else(|| damaged("a cut record"))?;
        let (vl, c) = varint::get(&b[a..]).ok_or_else(|| damaged("a cut record"))?;
        let ks = self.pos + a + c;
        let vs = ks + kl as usize;
        let end = vs + vl as usize;
        if end > self.raw.len() {
            return Err(damaged("a record across blocks"));
        }
        self.k = (ks, vs);
        self.v = (vs, end);
        self.pos = end;
        Ok(true)
    }

    #[inline]
    pub fn key(&self) -> &[u8] {
        &self.raw[self.k.0..self.k.1]
    }

    #[inline]
    pub fn value(&self) -> &[u8] {
        &self.raw[self.v.0..self.v.1]
    }
}

/// Writes an index of segments (fsynced: the shuffle serves what it
/// says).
pub fn write_index(path: &Path, segs: &[SegmentInfo]) -> io::Result<()> {
    let mut b = INDEX.header().to_vec();
    b.extend_from_slice(&(segs.len() as u32).to_le_bytes());
    for s in segs {
        for x in [s.offset, s.raw_len, s.part_len, s.records] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend_from_slice(&s.crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(path, b)
}

/// Reads an index written by [`write_index`].
pub fn read_index(path: &Path) -> io::Result<Vec<SegmentInfo>> {
    let b = std::fs::read(path)?;
    parse_index(&b).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

pub fn parse_index(b: &[u8]) -> Result<Vec<SegmentInfo>, String> {
    let (_, body) = INDEX.check(b).map_err(|e| e.to_string())?;
    if body.len() < 8 {
        return Err("map output index is cut short".into());
    }
    let (data, tail) = b.split_at(b.len() - 4);
    if crc32c::crc32c(data).to_le_bytes() != tail {
        return Err("map output index fails its checksum".into());
    }
    let body = &data[hstack_daemon::format::HEADER_LEN..];
    let n = u32::from_le_bytes(body[..4].try_into().expect("4")) as usize;
    let rec = 4 * 8 + 4;
    if body.len() != 4 + n * rec {
        return Err("map output index has the wrong length".into());
    }
    let u = |s: &[u8], i: usize| u64::from_le_bytes(s[i * 8..i * 8 + 8].try_into().expect("8"));
    Ok(body[4..]
        .chunks_exact(rec)
        .map(|s| SegmentInfo {
            offset: u(s, 0),
            raw_len: u(s, 1),
            part_len: u(s, 2),
            records: u(s, 3),
            crc: u32::from_le_bytes(s[32..36].try_into().expect("4")),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_two(compress: bool) -> (Vec<u8>, Vec<SegmentInfo>) {
        let mut out = Vec::new();
        let mut segs = Vec::new();
        let mut w = SegmentWriter::new(&mut out, 0, compress);
        for i in 0..20_000u32 {
            w.append(format!("key{i:06}").as_bytes(), &i.to_le_bytes())
                .unwrap();
        }
        segs.push(w.finish().unwrap());
        let off = out.len() as u64;
        let w = SegmentWriter::new(&mut out, off, compress);
        segs.push(w.finish().unwrap()); // an empty partition
        let off = out.len() as u64;
        let mut w = SegmentWriter::new(&mut out, off, compress);
        w.append(b"", b"").unwrap();
        w.append(b"k", &vec![7u8; 300_000]).unwrap(); // a record above BLOCK
        segs.push(w.finish().unwrap());
        (out, segs)
    }

    fn read_all(file: &[u8], s: &SegmentInfo) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut r = SegmentReader::new(&file[s.offset as usize..], s);
        let mut v = Vec::new();
        while r.next_record()? {
            v.push((r.key().to_vec(), r.value().to_vec()));
        }
        Ok(v)
    }

    #[test]
    fn segments_round_trip_plain_and_compressed() {
        for compress in [false, true] {
            let (file, segs) = write_two(compress);
            assert_eq!(segs[0].records, 20_000);
            let a = read_all(&file, &segs[0]).unwrap();
            assert_eq!(a.len(), 20_000);
            assert_eq!(a[123].0, b"key000123");
            assert_eq!(a[123].1, 123u32.to_le_bytes());
            assert!(read_all(&file, &segs[1]).unwrap().is_empty());
            let c = read_all(&file, &segs[2]).unwrap();
            assert_eq!(c.len(), 2);
            assert_eq!(c[1].1.len(), 300_000);
            if compress {
                assert!(segs[0].part_len < segs[0].raw_len, "{:?}", segs[0]);
            }
        }
    }

    #[test]
    fn a_damaged_segment_is_an_error_never_records() {
        for compress in [false, true] {
            let (mut file, segs) = write_two(compress);
            let at = segs[0].offset as usize + 5000;
            file[at] ^= 0x40;
            let e = read_all(&file, &segs[0]).unwrap_err();
            assert!(e.to_string().contains("damaged"), "{e}");
        }
    }

    #[test]
    fn the_index_round_trips_and_refuses_damage() {
        let (_, segs) = write_two(true);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("file.out.index");
        write_index(&p, &segs).unwrap();
        assert_eq!(read_index(&p).unwrap(), segs);
        let mut b = std::fs::read(&p).unwrap();
        b[20] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(read_index(&p).is_err());
    }
}

//! The jute encoding of `zookeeper.jute`, as far as the client protocol
//! needs it: big-endian integers, length-prefixed buffers and strings
//! (-1 = null), count-prefixed vectors. The server's ZooKeeper port and
//! the load generator of `hstack bench zk` share it.

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T> = std::result::Result<T, Malformed>;

/// Reads one record from a frame's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Malformed(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn int(&mut self) -> Result<i32> {
        let b = self.take(4, "int")?;
        Ok(i32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    pub fn long(&mut self) -> Result<i64> {
        let b = self.take(8, "long")?;
        Ok(i64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.take(1, "boolean")?[0] != 0)
    }

    /// A buffer; null reads as empty.
    pub fn buffer(&mut self) -> Result<Vec<u8>> {
        let len = self.int()?;
        if len < 0 {
            return Ok(vec![]);
        }
        Ok(self.take(len as usize, "buffer")?.to_vec())
    }

    /// A ustring; null reads as empty.
    pub fn string(&mut self) -> Result<String> {
        let bytes = self.buffer()?;
        String::from_utf8(bytes).map_err(|_| Malformed("a string is not UTF-8".into()))
    }

    /// A vector's count (null = 0), bounded by what is left so a garbage
    /// count cannot make us allocate.
    pub fn count(&mut self) -> Result<usize> {
        let n = self.int()?;
        if n < 0 {
            return Ok(0);
        }
        if n as usize > self.remaining() {
            return Err(Malformed(format!(
                "a vector of {n} elements in {} bytes",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    pub fn strings(&mut self) -> Result<Vec<String>> {
        let n = self.count()?;
        (0..n).map(|_| self.string()).collect()
    }
}

/// Writes records into a frame (the caller adds the length prefix).
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    /// A frame with room for its 4-byte length prefix.
    pub fn frame() -> Self {
        Self { buf: vec![0; 4] }
    }

    /// The frame with its length prefix filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as i32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }

    pub fn int(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn long(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(v as u8);
        self
    }

    pub fn buffer(&mut self, v: &[u8]) -> &mut Self {
        self.int(v.len() as i32);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, v: &str) -> &mut Self {
        self.buffer(v.as_bytes())
    }

    pub fn strings(&mut self, v: &[String]) -> &mut Self {
        self.int(v.len() as i32);
        for s in v {
            self.string(s);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::frame();
        w.int(-7)
            .long(1 << 40)
            .bool(true)
            .buffer(b"ab")
            .string("zk")
            .strings(&["x".into(), "yz".into()]);
        let f = w.finish();
        assert_eq!(
            i32::from_be_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        let mut r = Reader::new(&f[4..]);
        assert_eq!(r.int().unwrap(), -7);
        assert_eq!(r.long().unwrap(), 1 << 40);
        assert!(r.bool().unwrap());
        assert_eq!(r.buffer().unwrap(), b"ab");
        assert_eq!(r.string().unwrap(), "zk");
        assert_eq!(r.strings().unwrap(), vec!["x", "yz"]);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Reader::new(&[0, 0]).int().is_err());
        // A buffer claiming more bytes than there are.
        assert!(Reader::new(&[0, 0, 0, 9, 1]).buffer().is_err());
        // A vector claiming two billion elements.
        assert!(Reader::new(&[0x7f, 0xff, 0xff, 0xff]).strings().is_err());
        assert!(Reader::new(&[0, 0, 0, 1, 0xff]).string().is_err());
        // Null reads as empty.
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff]).buffer().unwrap(),
            b""
        );
    }
}

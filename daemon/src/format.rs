//! Versioned on-disk formats. Every file (or store) a daemon keeps starts
//! with an 8-byte magic naming what it is and a 4-byte little-endian
//! version, then a body in `postcard` (a maintained, compact serde
//! encoding). A reader knows which versions it can read: anything else is
//! refused with an error that names the version found, never misread.
//!
//! Each format keeps a small fixture of every version in the repository
//! (`tests/fixtures/formats/`), read back by a test, so a change that would
//! misread existing data fails CI.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes of a header: magic, then version.
pub const HEADER_LEN: usize = 12;

/// One on-disk format: what it is, and the version this build writes.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub magic: [u8; 8],
    /// What a person calls it (`namespace image`, `edit log segment`).
    pub what: &'static str,
    /// The version written.
    pub version: u32,
    /// The oldest version still read.
    pub oldest: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not an hstack {what} (its first bytes are not {magic:?})")]
    NotThisFormat { what: &'static str, magic: String },
    #[error(
        "{what} of format version {found}, which this hstack does not read (it reads versions {oldest} to {newest}){hint}"
    )]
    UnknownVersion {
        what: &'static str,
        found: u32,
        oldest: u32,
        newest: u32,
        hint: &'static str,
    },
    #[error("{what} is damaged: {message}")]
    Damaged { what: &'static str, message: String },
}

impl Format {
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&self.magic);
        h[8..].copy_from_slice(&self.version.to_le_bytes());
        h
    }

    /// The version in `bytes`' header and the body after it; an error if
    /// the header is not this format's or names a version not read.
    pub fn check<'a>(&self, bytes: &'a [u8]) -> Result<(u32, &'a [u8]), FormatError> {
        if bytes.len() < HEADER_LEN || bytes[..8] != self.magic {
            return Err(FormatError::NotThisFormat {
                what: self.what,
                magic: String::from_utf8_lossy(&self.magic).into_owned(),
            });
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version < self.oldest || version > self.version {
            return Err(FormatError::UnknownVersion {
                what: self.what,
                found: version,
                oldest: self.oldest,
                newest: self.version,
                hint: if version > self.version {
                    ": it was written by a newer hstack"
                } else {
                    ""
                },
            });
        }
        Ok((version, &bytes[HEADER_LEN..]))
    }

    /// Header, then `value` in postcard.
    pub fn encode<T: Serialize>(&self, value: &T) -> Vec<u8> {
        let mut out = self.header().to_vec();
        postcard::to_io(value, &mut out).expect("postcard writes to a Vec");
        out
    }

    /// The value of a whole file of this format.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, FormatError> {
        let (_, body) = self.check(bytes)?;
        decode_body(self.what, body)
    }
}

/// A postcard body (no header: records inside a file, wire payloads).
pub fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard writes to a Vec")
}

/// Decodes a postcard body that must be exactly one value.
pub fn decode_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, FormatError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(FormatError::Damaged {
            what,
            message: format!("{} bytes after its end", rest.len()),
        }),
        Err(e) => Err(FormatError::Damaged {
            what,
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Format = Format {
        magic: *b"HSTKTEST",
        what: "test file",
        version: 2,
        oldest: 1,
    };

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let bytes = F.encode(&(7u64, "seven".to_string()));
        assert_eq!(&bytes[..8], b"HSTKTEST");
        assert_eq!(
            F.decode::<(u64, String)>(&bytes).unwrap(),
            (7, "seven".into())
        );
        // A newer version is named, and refused.
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&3u32.to_le_bytes());
        let e = F.decode::<(u64, String)>(&newer).unwrap_err();
        assert!(
            e.to_string().contains("version 3") && e.to_string().contains("newer"),
            "{e}"
        );
        // As is an older one no longer read.
        let mut older = bytes.clone();
        older[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(F
            .decode::<(u64, String)>(&older)
            .unwrap_err()
            .to_string()
            .contains("version 0"));
        // Another file is not misread.
        let e = F.decode::<(u64, String)>(b"HSTKIMG1whatever").unwrap_err();
        assert!(matches!(e, FormatError::NotThisFormat { .. }), "{e}");
        // Nor is a body with trailing bytes.
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            F.decode::<(u64, String)>(&long),
            Err(FormatError::Damaged { .. })
        ));
    }
}

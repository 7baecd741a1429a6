//! Big-endian reading and writing of the envelope structures (and of the local
//! keystore in `vault-keys`).

use crate::CryptoError;

/// A cursor over untrusted bytes: every read is bounds-checked.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, naming `what` in its errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            what,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CryptoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                CryptoError::malformed(self.what, format!("truncated at byte {}", self.pos))
            })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CryptoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a 4-byte magic and a 2-byte format version, naming what is wrong.
    pub fn expect_magic_and_version(
        &mut self,
        magic: [u8; 4],
        version: u16,
    ) -> Result<(), CryptoError> {
        if self.array::<4>()? != magic {
            return Err(CryptoError::malformed(self.what, "bad magic"));
        }
        let found = self.u16()?;
        if found != version {
            return Err(CryptoError::UnsupportedVersion {
                what: self.what,
                version: found,
            });
        }
        Ok(())
    }

    /// Like [`Self::expect_magic_and_version`], for a format with several readable
    /// versions; returns the one found.
    pub fn expect_magic_and_versions(
        &mut self,
        magic: [u8; 4],
        versions: &[u16],
    ) -> Result<u16, CryptoError> {
        if self.array::<4>()? != magic {
            return Err(CryptoError::malformed(self.what, "bad magic"));
        }
        let found = self.u16()?;
        if !versions.contains(&found) {
            return Err(CryptoError::UnsupportedVersion {
                what: self.what,
                version: found,
            });
        }
        Ok(found)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, CryptoError> {
        Ok(self.array::<1>()?[0])
    }

    /// The next big-endian u16.
    pub fn u16(&mut self) -> Result<u16, CryptoError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// The next big-endian u32.
    pub fn u32(&mut self) -> Result<u32, CryptoError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A UTF-8 string behind a one-byte length.
    pub fn short_str(&mut self) -> Result<&'a str, CryptoError> {
        let len = usize::from(self.u8()?);
        self.str_of_len(len)
    }

    /// A UTF-8 string behind a two-byte length.
    pub fn str16(&mut self) -> Result<&'a str, CryptoError> {
        let len = usize::from(self.u16()?);
        self.str_of_len(len)
    }

    fn str_of_len(&mut self, len: usize) -> Result<&'a str, CryptoError> {
        let what = self.what;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| CryptoError::malformed(what, "string is not UTF-8"))
    }

    /// Fails unless every byte was read.
    pub fn expect_end(&self) -> Result<(), CryptoError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(CryptoError::malformed(
                self.what,
                "unexpected trailing bytes",
            ))
        }
    }
}

/// Appends a string with a u8 length prefix.
pub fn put_short_str(out: &mut Vec<u8>, s: &str) {
    // Callers validate lengths before encoding (tenant ids, provider ids).
    let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Appends a string with a u16 length prefix.
pub fn put_str16(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

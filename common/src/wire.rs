//! Length-prefixed big-endian byte encoding used by every signed structure (docs/protocol.md).

use crate::Error;

/// Builds a canonical byte string. A field too long for its length prefix makes `finish` fail,
/// so encoders never panic and never truncate a length silently.
#[derive(Debug)]
pub struct Writer {
    what: &'static str,
    out: Vec<u8>,
    too_long: Option<&'static str>,
}

impl Writer {
    /// `what` names the structure in the error `finish` may return.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            out: Vec::new(),
            too_long: None,
        }
    }
    /// Appends bytes as they are.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.raw(&[v])
    }
    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    /// A count written as u16; more than 65535 fails `finish`.
    pub fn count16(&mut self, n: usize) -> &mut Self {
        match u16::try_from(n) {
            Ok(n) => self.u16(n),
            Err(_) => self.fail("a count over 65535"),
        }
    }
    fn fail(&mut self, why: &'static str) -> &mut Self {
        self.too_long.get_or_insert(why);
        self
    }
    /// One length byte, then the bytes; longer than 255 bytes fails `finish`.
    pub fn short(&mut self, bytes: &[u8]) -> &mut Self {
        match u8::try_from(bytes.len()) {
            Ok(len) => self.u8(len).raw(bytes),
            Err(_) => self.fail("a short field over 255 bytes"),
        }
    }
    /// Two length bytes, then the bytes; longer than 65535 bytes fails `finish`.
    pub fn medium(&mut self, bytes: &[u8]) -> &mut Self {
        match u16::try_from(bytes.len()) {
            Ok(len) => self.u16(len).raw(bytes),
            Err(_) => self.fail("a medium field over 65535 bytes"),
        }
    }
    /// Four length bytes, then the bytes; 4 GiB or more fails `finish`.
    pub fn long(&mut self, bytes: &[u8]) -> &mut Self {
        match u32::try_from(bytes.len()) {
            Ok(len) => self.u32(len).raw(bytes),
            Err(_) => self.fail("a long field over 4 GiB"),
        }
    }
    /// The bytes, or which field did not fit its length prefix.
    pub fn finish(&mut self) -> Result<Vec<u8>, Error> {
        match self.too_long.take() {
            Some(why) => Err(Error::Malformed {
                what: self.what,
                detail: format!("{why} cannot be encoded"),
            }),
            None => Ok(std::mem::take(&mut self.out)),
        }
    }
}

/// Reads a canonical byte string, failing on truncation and on trailing bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `bytes`, naming them `what` in errors.
    pub fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, rest: bytes }
    }
    fn malformed(&self, detail: impl Into<String>) -> Error {
        Error::Malformed {
            what: self.what,
            detail: detail.into(),
        }
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(self.malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take(N)?
            .try_into()
            .map_err(|_| self.malformed("truncated"))
    }
    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    /// The next big-endian u16.
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    /// The next big-endian u64.
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// A byte string prefixed by its one-byte length.
    pub fn short(&mut self) -> Result<&'a [u8], Error> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }
    /// A field with a 4-byte length.
    pub fn long(&mut self) -> Result<&'a [u8], Error> {
        let len = u32::from_be_bytes(self.array()?);
        self.take(len as usize)
    }
    /// A UTF-8 string prefixed by its one-byte length.
    pub fn short_str(&mut self) -> Result<&'a str, Error> {
        let bytes = self.short()?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed("text is not UTF-8"))
    }
    /// Fails unless the next bytes are `literal`.
    pub fn expect(&mut self, literal: &[u8]) -> Result<(), Error> {
        if self.take(literal.len())? != literal {
            return Err(self.malformed("wrong magic or version"));
        }
        Ok(())
    }
    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), Error> {
        if !self.rest.is_empty() {
            return Err(self.malformed(format!("{} trailing bytes", self.rest.len())));
        }
        Ok(())
    }
}

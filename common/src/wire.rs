//! Length-prefixed big-endian byte encoding used by every signed structure (docs/protocol.md).

use crate::Error;

/// Builds a canonical byte string.
#[derive(Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.raw(&[v])
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    /// One length byte, then the bytes. Callers guarantee `bytes.len() <= 255`.
    pub fn short(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u8::try_from(bytes.len()).expect("short field longer than 255 bytes");
        self.u8(len).raw(bytes)
    }
    /// Two length bytes, then the bytes. Callers guarantee `bytes.len() <= 65535`.
    pub fn medium(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u16::try_from(bytes.len()).expect("medium field longer than 65535 bytes");
        self.u16(len).raw(bytes)
    }
    /// Four length bytes, then the bytes.
    pub fn long(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).expect("long field longer than 4 GiB");
        self.u32(len).raw(bytes)
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Reads a canonical byte string, failing on truncation and on trailing bytes.
pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, rest: bytes }
    }
    fn malformed(&self, detail: impl Into<String>) -> Error {
        Error::Malformed {
            what: self.what,
            detail: detail.into(),
        }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(self.malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn short(&mut self) -> Result<&'a [u8], Error> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }
    pub fn short_str(&mut self) -> Result<&'a str, Error> {
        let bytes = self.short()?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed("text is not UTF-8"))
    }
    pub fn expect(&mut self, literal: &[u8]) -> Result<(), Error> {
        if self.take(literal.len())? != literal {
            return Err(self.malformed("wrong magic or version"));
        }
        Ok(())
    }
    pub fn finish(self) -> Result<(), Error> {
        if !self.rest.is_empty() {
            return Err(self.malformed(format!("{} trailing bytes", self.rest.len())));
        }
        Ok(())
    }
}

//! A canonical, length-prefixed byte encoder for transcripts that are hashed or signed.
//!
//! Every value is written with a fixed width (integers little-endian, `usize` widened to `u64`,
//! `f64` as its IEEE-754 bit pattern) and every variable-length value (strings, byte strings,
//! lists) is preceded by its length as a `u64`. Each field is preceded by a one-byte tag. So the
//! encoding is injective: two different field sequences never encode to the same bytes. It is
//! deliberately independent of serde, whose output is not canonical across formats or versions.

/// Accumulates a canonical encoding.
#[derive(Debug, Default)]
pub(crate) struct Canon {
    bytes: Vec<u8>,
}

impl Canon {
    /// A new encoding that starts with the length-prefixed domain separator `domain`.
    pub(crate) fn new(domain: &[u8]) -> Self {
        let mut c = Self { bytes: Vec::with_capacity(256) };
        c.raw_bytes(domain);
        c
    }

    fn raw_bytes(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(b);
    }

    /// Field `tag`: a `u64`.
    pub(crate) fn u64(&mut self, tag: u8, v: u64) -> &mut Self {
        self.bytes.push(tag);
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Field `tag`: a `usize`, widened to `u64`.
    pub(crate) fn usize(&mut self, tag: u8, v: usize) -> &mut Self {
        self.u64(tag, v as u64)
    }

    /// Field `tag`: an `f64` as its bit pattern (so `0.0` and `-0.0` differ, NaNs by payload).
    pub(crate) fn f64(&mut self, tag: u8, v: f64) -> &mut Self {
        self.u64(tag, v.to_bits())
    }

    /// Field `tag`: a boolean as one byte.
    pub(crate) fn bool(&mut self, tag: u8, v: bool) -> &mut Self {
        self.bytes.push(tag);
        self.bytes.push(u8::from(v));
        self
    }

    /// Field `tag`: a length-prefixed byte string.
    pub(crate) fn bytes(&mut self, tag: u8, v: &[u8]) -> &mut Self {
        self.bytes.push(tag);
        self.raw_bytes(v);
        self
    }

    /// Field `tag`: a length-prefixed UTF-8 string.
    pub(crate) fn str(&mut self, tag: u8, v: &str) -> &mut Self {
        self.bytes(tag, v.as_bytes())
    }

    /// The encoding.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixes_prevent_ambiguity() {
        let enc = |a: &str, b: &str| {
            let mut c = Canon::new(b"d");
            c.str(1, a).str(2, b);
            c.finish()
        };
        assert_ne!(enc("ab", "c"), enc("a", "bc"));
        let mut x = Canon::new(b"d");
        x.f64(1, 0.0);
        let mut y = Canon::new(b"d");
        y.f64(1, -0.0);
        assert_ne!(x.finish(), y.finish());
        assert_ne!(Canon::new(b"ab").finish(), Canon::new(b"a").finish());
    }
}

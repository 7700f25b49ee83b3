//! Bodies on the wire: their encodings, the little-endian codecs of their values, chunked transfer and the one
//! reassembly loop that every streamed body goes through.
//!
//! Models travel as little-endian `f32` and encrypted bodies and partial decryptions as little-endian `u64`, in
//! chunks of [`CHUNK_BYTES`], far below gRPC's 4 MiB message limit, so no single message grows with the model.

use super::proto;
use tokio_stream::{Stream, StreamExt};

/// Bytes per streamed chunk (1 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Largest message either side accepts (4 MiB: one chunk plus headroom for headers).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// How the values of an uploaded body are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// Plaintext: the delta from the global model, one little-endian `f32` per parameter.
    F32Delta,
    /// Secure aggregation: one little-endian `u64` RLWE body per coefficient.
    RlweBodies,
}

impl BodyEncoding {
    /// Bytes per value.
    pub const fn value_bytes(self) -> usize {
        match self {
            Self::F32Delta => 4,
            Self::RlweBodies => 8,
        }
    }
}

impl From<BodyEncoding> for proto::BodyEncoding {
    fn from(e: BodyEncoding) -> Self {
        match e {
            BodyEncoding::F32Delta => Self::F32Delta,
            BodyEncoding::RlweBodies => Self::RlweBodies,
        }
    }
}

impl TryFrom<proto::BodyEncoding> for BodyEncoding {
    type Error = BodyError;

    fn try_from(e: proto::BodyEncoding) -> Result<Self, BodyError> {
        match e {
            proto::BodyEncoding::F32Delta => Ok(Self::F32Delta),
            proto::BodyEncoding::RlweBodies => Ok(Self::RlweBodies),
            proto::BodyEncoding::Unspecified => Err(BodyError::UnknownEncoding),
        }
    }
}

/// A body that does not match its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// More bytes arrived than the header declared.
    #[error("body exceeds its declared size of {expected} bytes")]
    TooLong {
        /// Declared size.
        expected: usize,
    },
    /// The stream ended early.
    #[error("body has {actual} bytes but its header declared {expected}")]
    TooShort {
        /// Declared size.
        expected: usize,
        /// Received size.
        actual: usize,
    },
    /// A byte length that is not a whole number of values.
    #[error("body of {bytes} bytes is not a whole number of {value_bytes}-byte values")]
    Ragged {
        /// The length.
        bytes: usize,
        /// Bytes per value.
        value_bytes: usize,
    },
    /// A declared value count whose byte size does not fit this machine.
    #[error("a body of {0} values does not fit this machine")]
    TooLarge(u64),
    /// A header whose encoding this version does not know.
    #[error("unknown body encoding")]
    UnknownEncoding,
    /// A stream that does not start with its header, or has a second one.
    #[error("{0}")]
    OutOfOrder(&'static str),
}

/// Little-endian `f32` bytes: the model's wire and artifact format.
pub fn f32s_to_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Parses little-endian `f32` bytes.
///
/// # Errors
/// [`BodyError::Ragged`] when the length is not a multiple of 4.
pub fn f32s_from_le(bytes: &[u8]) -> Result<Vec<f32>, BodyError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(BodyError::Ragged { bytes: bytes.len(), value_bytes: 4 });
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Little-endian `u64` bytes: encrypted bodies and partial decryptions.
pub fn u64s_to_le(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Parses little-endian `u64` bytes.
///
/// # Errors
/// [`BodyError::Ragged`] when the length is not a multiple of 8.
pub fn u64s_from_le(bytes: &[u8]) -> Result<Vec<u64>, BodyError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(BodyError::Ragged { bytes: bytes.len(), value_bytes: 8 });
    }
    Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

/// The byte size of `count` values of `value_bytes` each.
///
/// # Errors
/// [`BodyError::TooLarge`] when it overflows `usize`.
pub fn body_bytes(count: u64, value_bytes: usize) -> Result<usize, BodyError> {
    usize::try_from(count).ok().and_then(|c| c.checked_mul(value_bytes)).ok_or(BodyError::TooLarge(count))
}

/// Splits bytes into transfer chunks of at most [`CHUNK_BYTES`].
pub fn chunks(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    bytes.chunks(CHUNK_BYTES).map(<[u8]>::to_vec)
}

/// Reassembles a chunked body while enforcing its declared size.
#[derive(Debug)]
pub struct BodyAssembler {
    expected: usize,
    bytes: Vec<u8>,
}

impl BodyAssembler {
    /// Starts a body of exactly `expected` bytes. Memory is reserved as chunks arrive, never ahead of them, so a
    /// lying header cannot make the receiver allocate.
    pub fn new(expected: usize) -> Self {
        Self { expected, bytes: Vec::new() }
    }

    /// Appends a chunk.
    ///
    /// # Errors
    /// [`BodyError::TooLong`] when the chunk overflows the declared size.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        if self.bytes.len() + chunk.len() > self.expected {
            return Err(BodyError::TooLong { expected: self.expected });
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// Returns the body.
    ///
    /// # Errors
    /// [`BodyError::TooShort`] when fewer bytes arrived than declared.
    pub fn finish(self) -> Result<Vec<u8>, BodyError> {
        if self.bytes.len() != self.expected {
            return Err(BodyError::TooShort { expected: self.expected, actual: self.bytes.len() });
        }
        Ok(self.bytes)
    }
}

/// One message of a streamed body: a header, then chunks of bytes.
pub enum Part<H> {
    /// The header (first message only).
    Header(H),
    /// A chunk of the body.
    Chunk(Vec<u8>),
    /// A message with neither (refused).
    Empty,
}

/// A streamed message type made of one header and body chunks.
pub trait Chunked: Sized {
    /// The header.
    type Header;
    /// Which part this message is.
    fn into_part(self) -> Part<Self::Header>;
    /// A header message.
    fn header(header: Self::Header) -> Self;
    /// A chunk message.
    fn chunk(bytes: Vec<u8>) -> Self;
}

macro_rules! chunked {
    ($msg:ident, $module:ident, $header:ident, $chunk:ident) => {
        impl Chunked for proto::$msg {
            type Header = proto::$header;
            fn into_part(self) -> Part<proto::$header> {
                match self.body {
                    Some(proto::$module::Body::Header(h)) => Part::Header(h),
                    Some(proto::$module::Body::$chunk(b)) => Part::Chunk(b),
                    None => Part::Empty,
                }
            }
            fn header(header: proto::$header) -> Self {
                Self { body: Some(proto::$module::Body::Header(header)) }
            }
            fn chunk(bytes: Vec<u8>) -> Self {
                Self { body: Some(proto::$module::Body::$chunk(bytes)) }
            }
        }
    };
}

chunked!(TaskChunk, task_chunk, TaskHeader, ModelChunk);
chunked!(UpdateChunk, update_chunk, UpdateHeader, BodyChunk);
chunked!(PartialChunk, partial_chunk, PartialHeader, BodyChunk);

/// A header and its body as the messages of one stream.
pub fn stream_messages<C: Chunked>(header: C::Header, body: &[u8]) -> Vec<C> {
    std::iter::once(C::header(header)).chain(chunks(body).map(C::chunk)).collect()
}

/// Reads the header that must open a stream.
///
/// # Errors
/// The stream's own error, or [`BodyError::OutOfOrder`] (converted into `E`) when the stream is empty or starts
/// with a chunk.
pub async fn read_header<C, E, S>(stream: &mut S) -> Result<C::Header, E>
where
    C: Chunked,
    S: Stream<Item = Result<C, E>> + Unpin,
    E: From<BodyError>,
{
    match stream.next().await {
        Some(Ok(message)) => match message.into_part() {
            Part::Header(h) => Ok(h),
            _ => Err(BodyError::OutOfOrder("a stream must start with its header").into()),
        },
        Some(Err(e)) => Err(e),
        None => Err(BodyError::OutOfOrder("the stream ended before its header").into()),
    }
}

/// Reads the rest of a stream as one body of exactly `expected` bytes. This is the only body-reading loop of
/// Cohort: model downloads, updates and partial decryptions all go through it.
///
/// # Errors
/// The stream's own error, or a [`BodyError`] (converted into `E`) for a second header or a size other than the
/// declared one.
pub async fn read_body<C, E, S>(stream: &mut S, expected: usize) -> Result<Vec<u8>, E>
where
    C: Chunked,
    S: Stream<Item = Result<C, E>> + Unpin,
    E: From<BodyError>,
{
    let mut body = BodyAssembler::new(expected);
    while let Some(message) = stream.next().await {
        match message?.into_part() {
            Part::Chunk(bytes) => body.push(&bytes)?,
            _ => return Err(BodyError::OutOfOrder("a second header inside a stream").into()),
        }
    }
    Ok(body.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunked_bodies_reassemble(len in 0usize..(3 * CHUNK_BYTES), extra in 1usize..10) {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut a = BodyAssembler::new(len);
            for c in chunks(&body) {
                prop_assert!(c.len() <= CHUNK_BYTES);
                a.push(&c).unwrap();
            }
            prop_assert_eq!(a.finish().unwrap(), body);
            let mut short = BodyAssembler::new(len + extra);
            short.push(&vec![0; len]).unwrap();
            let too_short = matches!(short.finish(), Err(BodyError::TooShort { .. }));
            prop_assert!(too_short);
            let mut long = BodyAssembler::new(len);
            let too_long = matches!(long.push(&vec![0; len + extra]), Err(BodyError::TooLong { .. }));
            prop_assert!(too_long);
        }

        #[test]
        fn value_codecs_round_trip(f in proptest::collection::vec(any::<f32>(), 0..64),
                                   u in proptest::collection::vec(any::<u64>(), 0..64)) {
            let back = f32s_from_le(&f32s_to_le(&f)).unwrap();
            prop_assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), f.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            prop_assert_eq!(u64s_from_le(&u64s_to_le(&u)).unwrap(), u);
        }
    }

    #[test]
    fn ragged_and_oversized_bodies_are_refused() {
        assert_eq!(f32s_from_le(&[0; 5]), Err(BodyError::Ragged { bytes: 5, value_bytes: 4 }));
        assert_eq!(u64s_from_le(&[0; 12]), Err(BodyError::Ragged { bytes: 12, value_bytes: 8 }));
        assert_eq!(body_bytes(u64::MAX, 8), Err(BodyError::TooLarge(u64::MAX)));
        assert_eq!(body_bytes(3, 8), Ok(24));
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn streams_need_one_header_then_exactly_the_declared_body() {
        let header = proto::PartialHeader { round: None, value_count: 2 };
        let body = u64s_to_le(&[7, 9]);
        let ok: Vec<Result<proto::PartialChunk, BodyError>> =
            stream_messages(header.clone(), &body).into_iter().map(Ok).collect();
        let mut s = tokio_stream::iter(ok.clone());
        assert_eq!(run(read_header(&mut s)), Ok(header.clone()));
        assert_eq!(run(read_body(&mut s, 16)), Ok(body.clone()));
        // Starting with a chunk, a second header, or a short body are refused.
        let mut s = tokio_stream::iter(ok[1..].to_vec());
        assert!(matches!(run(read_header(&mut s)), Err(BodyError::OutOfOrder(_))));
        let mut twice = ok.clone();
        twice.push(Ok(proto::PartialChunk::header(header)));
        let mut s = tokio_stream::iter(twice[1..].to_vec());
        assert!(matches!(run(read_body(&mut s, 16)), Err(BodyError::OutOfOrder(_))));
        let mut s = tokio_stream::iter(ok[1..].to_vec());
        assert!(matches!(run(read_body(&mut s, 24)), Err(BodyError::TooShort { .. })));
    }
}

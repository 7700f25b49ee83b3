//! Streaming, coefficient-wise summation of client bodies (coordinator side).
//!
//! Memory is O(model): one running sum of the flat residue layout of [`crate::params`] plus a bitmap of received chunks per
//! client. Chunks may arrive in any order; every chunk is checked for index, length, range and
//! duplication before it touches the sum (hostile-input conformance, as tfhe's
//! `ParameterSetConformant`).

use crate::ids::ParticipantId;
use crate::params::SecAggContext;
use crate::ring::add_mod;
use std::collections::BTreeMap;
use thiserror::Error;

/// Errors of aggregation. Each names the client whose input was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AggregateError {
    /// The chunk index is beyond the vector.
    #[error("{client}: chunk {chunk} out of range (have {chunks} chunks)")]
    ChunkOutOfRange {
        /// Sender.
        client: ParticipantId,
        /// Offending index.
        chunk: usize,
        /// Number of chunks.
        chunks: usize,
    },
    /// A chunk of the wrong length.
    #[error("{client}: chunk {chunk} has {got} coefficients, expected {expected}")]
    WrongLength {
        /// Sender.
        client: ParticipantId,
        /// Chunk index.
        chunk: usize,
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// A coefficient is not reduced mod q.
    #[error("{client}: chunk {chunk} has a coefficient >= q")]
    OutOfRange {
        /// Sender.
        client: ParticipantId,
        /// Chunk index.
        chunk: usize,
    },
    /// The same chunk was sent twice.
    #[error("{client}: duplicate chunk {chunk}")]
    DuplicateChunk {
        /// Sender.
        client: ParticipantId,
        /// Chunk index.
        chunk: usize,
    },
    /// More clients than the headroom allows.
    #[error("more than {max} clients")]
    TooManyClients {
        /// max_clients.
        max: u32,
    },
    /// A client started but did not finish its upload; its partial chunks are already in the
    /// sum, so the aggregate cannot be decrypted for any participant set.
    #[error("{0} did not complete its upload")]
    Incomplete(ParticipantId),
    /// No client uploaded.
    #[error("no complete upload")]
    Empty,
}

/// The sum of the bodies of a set of clients: `Σ_{i∈S} b_i mod Q`, residue by residue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateBody {
    participants: Vec<ParticipantId>,
    sum: Vec<u64>,
}

impl AggregateBody {
    /// The clients whose bodies are summed (sorted, distinct): the set `S`.
    pub fn participants(&self) -> &[ParticipantId] {
        &self.participants
    }
    /// The summed bodies.
    pub fn sum(&self) -> &[u64] {
        &self.sum
    }
}

/// Streaming aggregator for one round.
#[derive(Debug)]
pub struct Aggregator {
    ctx: SecAggContext,
    len: usize,
    chunks: usize,
    sum: Vec<u64>,
    received: BTreeMap<ParticipantId, (Vec<u64>, usize)>,
}

impl Aggregator {
    /// An empty aggregate for vectors of `len` coordinates (model length + 1 weight coordinate);
    /// it holds `ctx.residues_len(len)` residues.
    pub fn new(ctx: &SecAggContext, len: usize) -> Self {
        Self {
            ctx: ctx.clone(),
            len,
            chunks: ctx.num_chunks(len),
            sum: vec![0; ctx.residues_len(len)],
            received: BTreeMap::new(),
        }
    }

    /// Number of chunks each client must send.
    pub fn num_chunks(&self) -> usize {
        self.chunks
    }

    /// Adds chunk `chunk` of `client`'s body: the `ctx.chunk_residues(chunk, len)` slice of its
    /// flat body (prime-major within the chunk, see [`crate::params`]).
    ///
    /// # Errors
    /// [`AggregateError::ChunkOutOfRange`], [`AggregateError::WrongLength`],
    /// [`AggregateError::OutOfRange`], [`AggregateError::DuplicateChunk`],
    /// [`AggregateError::TooManyClients`]. On error the sum is unchanged.
    pub fn add_chunk(&mut self, client: ParticipantId, chunk: usize, body: &[u64]) -> Result<(), AggregateError> {
        if chunk >= self.chunks {
            return Err(AggregateError::ChunkOutOfRange { client, chunk, chunks: self.chunks });
        }
        let range = self.ctx.chunk_residues(chunk, self.len);
        if body.len() != range.len() {
            return Err(AggregateError::WrongLength { client, chunk, expected: range.len(), got: body.len() });
        }
        if self.ctx.check_chunk(body).is_err() {
            return Err(AggregateError::OutOfRange { client, chunk });
        }
        let (word, bit) = (chunk / 64, 1u64 << (chunk % 64));
        if !self.received.contains_key(&client) && self.received.len() >= self.ctx.params().max_clients as usize {
            return Err(AggregateError::TooManyClients { max: self.ctx.params().max_clients });
        }
        let words = self.chunks.div_ceil(64);
        let entry = self.received.entry(client).or_insert_with(|| (vec![0; words], 0));
        if entry.0[word] & bit != 0 {
            return Err(AggregateError::DuplicateChunk { client, chunk });
        }
        entry.0[word] |= bit;
        entry.1 += 1;
        let c = body.len() / self.ctx.num_primes();
        let sum = &mut self.sum[range];
        for (i, &q) in self.ctx.moduli().iter().enumerate() {
            let block = i * c..(i + 1) * c;
            for (s, &b) in sum[block.clone()].iter_mut().zip(&body[block]) {
                *s = add_mod(*s, b, q);
            }
        }
        Ok(())
    }

    /// Adds a client's complete body vector (all chunks).
    ///
    /// # Errors
    /// As [`Aggregator::add_chunk`]; [`AggregateError::WrongLength`] (chunk 0) if `bodies` does
    /// not have `ctx.residues_len(len)` residues, [`AggregateError::OutOfRange`] for an unreduced
    /// residue, [`AggregateError::DuplicateChunk`] (chunk 0) if the client already sent chunks; all
    /// checked before anything is added.
    pub fn add_client(&mut self, client: ParticipantId, bodies: &[u64]) -> Result<(), AggregateError> {
        let expected = self.ctx.residues_len(self.len);
        if bodies.len() != expected {
            return Err(AggregateError::WrongLength { client, chunk: 0, expected, got: bodies.len() });
        }
        // Validate every chunk before adding any, so a bad body leaves no partial upload behind.
        for j in 0..self.chunks {
            if self.ctx.check_chunk(&bodies[self.ctx.chunk_residues(j, self.len)]).is_err() {
                return Err(AggregateError::OutOfRange { client, chunk: j });
            }
        }
        if self.received.contains_key(&client) {
            return Err(AggregateError::DuplicateChunk { client, chunk: 0 });
        }
        for j in 0..self.chunks {
            self.add_chunk(client, j, &bodies[self.ctx.chunk_residues(j, self.len)])?;
        }
        Ok(())
    }

    /// Clients that have sent every chunk.
    pub fn complete_clients(&self) -> Vec<ParticipantId> {
        self.received.iter().filter(|(_, (_, n))| *n == self.chunks).map(|(id, _)| *id).collect()
    }

    /// Closes the aggregate.
    ///
    /// # Errors
    /// [`AggregateError::Incomplete`] if a client sent only part of its chunks (the caller should
    /// buffer or withhold a client's chunks until its upload is complete if it wants to survive
    /// mid-upload dropouts); [`AggregateError::Empty`] if nobody uploaded.
    pub fn finish(self) -> Result<AggregateBody, AggregateError> {
        if let Some((id, _)) = self.received.iter().find(|(_, (_, n))| *n != self.chunks) {
            return Err(AggregateError::Incomplete(*id));
        }
        if self.received.is_empty() {
            return Err(AggregateError::Empty);
        }
        Ok(AggregateBody { participants: self.received.into_keys().collect(), sum: self.sum })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::SecAggParams;

    fn id(i: u32) -> ParticipantId {
        ParticipantId::new(i).unwrap()
    }

    #[test]
    fn sums_in_any_order_and_rejects_bad_chunks() {
        let ctx = SecAggParams::toy_insecure(16).build().unwrap();
        let q = ctx.moduli().to_vec();
        let len = 100; // 34 coefficients: chunks of 16, 16, 2 → 48, 48, 6 residues
        let total = ctx.residues_len(len);
        assert_eq!(total, 102);
        // Residue r of a body lies in the block of prime prime_of(r).
        let prime_of = |r: usize| {
            let j = r / 48;
            let c = ctx.chunk_coefficients(j, len).len();
            (r - j * 48) / c
        };
        let mut agg = Aggregator::new(&ctx, len);
        let a: Vec<u64> = (0..total).map(|r| q[prime_of(r)] - 1 - r as u64).collect();
        let b: Vec<u64> = (0..total).map(|r| 2 * r as u64 + 1).collect();
        agg.add_client(id(1), &a).unwrap();
        for j in [2, 0, 1] {
            agg.add_chunk(id(2), j, &b[ctx.chunk_residues(j, len)]).unwrap();
        }
        assert_eq!(
            agg.add_chunk(id(2), 1, &b[48..96]),
            Err(AggregateError::DuplicateChunk { client: id(2), chunk: 1 })
        );
        assert_eq!(
            agg.add_chunk(id(3), 3, &b[..6]),
            Err(AggregateError::ChunkOutOfRange { client: id(3), chunk: 3, chunks: 3 })
        );
        assert_eq!(
            agg.add_chunk(id(3), 2, &b[..48]),
            Err(AggregateError::WrongLength { client: id(3), chunk: 2, expected: 6, got: 48 })
        );
        // q_1 − 1 is fine in the prime-1 block but not in the prime-2 block (q_2 < q_1).
        let mut bad = vec![0u64; 48];
        bad[16] = q[1] - 1;
        assert!(agg.add_chunk(id(3), 0, &bad).is_ok());
        let mut agg2 = Aggregator::new(&ctx, len);
        bad[40] = q[1] - 1;
        assert_eq!(agg2.add_chunk(id(3), 0, &bad), Err(AggregateError::OutOfRange { client: id(3), chunk: 0 }));
        let mut bad_body = b.clone();
        bad_body[101] = q[0];
        assert_eq!(agg2.add_client(id(4), &bad_body), Err(AggregateError::OutOfRange { client: id(4), chunk: 2 }));
        assert!(agg2.complete_clients().is_empty(), "nothing added from a refused body");
        assert!(agg.add_client(id(5), &b[..101]).is_err());
        let mut agg = Aggregator::new(&ctx, len);
        agg.add_client(id(1), &a).unwrap();
        agg.add_client(id(2), &b).unwrap();
        assert!(matches!(agg.add_client(id(2), &b), Err(AggregateError::DuplicateChunk { .. })));
        let out = agg.finish().unwrap();
        assert_eq!(out.participants(), &[id(1), id(2)]);
        // (q − 1 − r) + (2r + 1) = q + r ≡ r.
        let expect: Vec<u64> = (0..total as u64).collect();
        assert_eq!(out.sum(), expect.as_slice());

        let mut agg = Aggregator::new(&ctx, len);
        agg.add_chunk(id(4), 0, &b[..48]).unwrap();
        assert_eq!(agg.finish().unwrap_err(), AggregateError::Incomplete(id(4)));
        assert_eq!(Aggregator::new(&ctx, len).finish().unwrap_err(), AggregateError::Empty);
    }
}

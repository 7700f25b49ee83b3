//! What may leave the node: the rule of `privacy.md` ("nothing leaves a node outside its ledger") as a type.
//!
//! Every value the node loop puts into a message that was computed from the node's records (its update, its
//! FedAvg weight, its training loss, its join figures, its evaluation) reaches the loop as an [`Outbound`],
//! which says on what basis it may leave:
//! - [`Basis::Released`]: a DP release, built together with the ledger record that charged it (the record's
//!   sequence number travels with the value). Post-processing ([`Outbound::map`]) keeps the basis.
//! - [`Basis::Unprotected`]: computed by a node that promises no privacy (its config has privacy off), sent as
//!   computed.
//! - [`Basis::DataFree`]: computed from no record at all (an empty evaluation of a node that releases none).
//!
//! The loop takes the value out only through [`Outbound::send`], which refuses an unprotected value on a node
//! whose config promises privacy. A [`crate::node::LocalWork`] that forgets a release therefore stops the node
//! with a [`ClientError::Policy`] instead of leaking: the check is in the one place every message passes, not
//! in each implementation.

use crate::node::ClientError;
use cohort_core::ledger::LedgerRecord;

/// On what basis a value may leave the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// A DP release charged by the ledger record with this sequence number.
    Released {
        /// The charging record's sequence number in the node's ledger.
        record: u64,
    },
    /// Computed from records by a node that promises no privacy.
    Unprotected,
    /// Computed from no record.
    DataFree,
}

/// A value the node may send, with its [`Basis`].
#[derive(Debug, Clone, PartialEq)]
#[must_use = "an outbound value leaves the node only through `send`"]
pub struct Outbound<T> {
    value: T,
    basis: Basis,
}

impl<T> Outbound<T> {
    /// A DP release, with the ledger record that charged it.
    pub fn released(value: T, record: &LedgerRecord) -> Self {
        Self { value, basis: Basis::Released { record: record.body.seq } }
    }

    /// A value computed from records by a node that promises no privacy. [`Outbound::send`] refuses it on a node
    /// that promises privacy.
    pub fn unprotected(value: T) -> Self {
        Self { value, basis: Basis::Unprotected }
    }

    /// A value computed from no record (for example an empty report).
    pub fn data_free(value: T) -> Self {
        Self { value, basis: Basis::DataFree }
    }

    /// The basis.
    pub fn basis(&self) -> Basis {
        self.basis
    }

    /// The value, to look at on the node (it does not leave by this).
    pub fn get(&self) -> &T {
        &self.value
    }

    /// Post-processing: a function of the value alone keeps its basis.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outbound<U> {
        Outbound { value: f(self.value), basis: self.basis }
    }

    /// The value, to put into a message as `what`, on a node that does (`private`) or does not promise privacy.
    ///
    /// # Errors
    /// [`ClientError::Policy`] for an [`Basis::Unprotected`] value on a node that promises privacy: nothing is
    /// sent.
    pub fn send(self, what: &str, private: bool) -> Result<T, ClientError> {
        if private && self.basis == Basis::Unprotected {
            return Err(ClientError::Policy(format!(
                "refusing to send {what}: it was computed from this node's records without a DP release recorded in \
                 its ledger, and this node's config promises privacy ([privacy] enabled = true)"
            )));
        }
        Ok(self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::ledger::{Mechanism, RecordBody};

    #[test]
    fn a_private_node_sends_only_releases_and_data_free_values() {
        let record = LedgerRecord {
            body: RecordBody { seq: 4, ..RecordBody::new("h", "fp", Mechanism::OpenDpCount) },
            hash: String::new(),
            signer: String::new(),
            signature: String::new(),
        };
        let released = Outbound::released(10.0, &record).map(|v| v * 2.0);
        assert_eq!(released.basis(), Basis::Released { record: 4 });
        assert_eq!(released.send("a count", true).unwrap(), 20.0);
        assert_eq!(Outbound::data_free(0).send("nothing", true).unwrap(), 0);
        let err = Outbound::unprotected(3).send("the held-out count", true).unwrap_err();
        assert!(matches!(err, ClientError::Policy(_)) && err.to_string().contains("the held-out count"), "{err}");
        // A node without DP promises nothing and sends what it computed.
        assert_eq!(Outbound::unprotected(3).send("the held-out count", false).unwrap(), 3);
    }
}

//! The commit receipt: proof, checked by the compiler, that a batch is durably stored. Only
//! this crate can create one (its fields are private and it has no public constructor), and
//! the ingest side can only encode an acknowledgement from one.

/// Counts of what one commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Raw frames archived.
    pub frames: u64,
    /// Records inserted (new).
    pub records: u64,
    /// Records already stored (a resend): not inserted again.
    pub duplicates: u64,
    /// Alarm events inserted.
    pub alarms: u64,
    /// Current-state rows inserted.
    pub current: u64,
    /// Additional records inserted.
    pub ext_records: u64,
    /// Decode errors recorded.
    pub decode_errors: u64,
}

/// Proof that the frames with the listed tickets are committed (transaction committed with the
/// configured durability).
#[derive(Debug)]
#[must_use]
pub struct CommitReceipt {
    batch: u64,
    seqs: Vec<u64>,
    stats: CommitStats,
}

impl CommitReceipt {
    /// Created by the store after `COMMIT` returned.
    pub(crate) fn new(batch: u64, mut seqs: Vec<u64>, stats: CommitStats) -> Self {
        seqs.sort_unstable();
        CommitReceipt { batch, seqs, stats }
    }

    /// The store's batch number (increases by one per commit of this store handle).
    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// Whether the frame with ticket `seq` was in the committed batch.
    pub fn covers(&self, seq: u64) -> bool {
        self.seqs.binary_search(&seq).is_ok()
    }

    /// The tickets covered, ascending.
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    /// What the commit wrote.
    pub fn stats(&self) -> CommitStats {
        self.stats
    }
}

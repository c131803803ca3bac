//! Acknowledgements and the rule that makes them safe: an answer that tells a device its data
//! is saved can only be encoded from the store's [`CommitReceipt`] for that very frame.
//!
//! The socket's write half is wrapped in [`ReplyWriter`], whose only way to send is an
//! [`AckBytes`]; `AckBytes` has a private field and two constructors: [`Immediate::encode`]
//! for answers that say nothing about storage (handshake, negotiation, refusals), and
//! [`AfterCommit::encode`], which needs a receipt that covers the frame's ticket. Sending a
//! "saved" answer before the commit is therefore a compile error, not a review comment.

use svoi_proto::Reply;
use svoi_store::CommitReceipt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes that may go to the device.
#[derive(Debug)]
pub struct AckBytes(Vec<u8>);

/// An answer that carries no promise about storage: sent right away.
#[derive(Debug)]
pub struct Immediate(Reply);

impl Immediate {
    /// The bytes of the answer.
    pub fn encode(self) -> AckBytes {
        AckBytes(self.0.to_bytes())
    }
}

/// An answer that says "saved": held until the frame's commit.
#[derive(Debug)]
pub struct AfterCommit {
    reply: Reply,
    seq: u64,
}

/// A receipt was presented for a frame it does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("commit receipt does not cover frame {0}")]
pub struct NotCovered(pub u64);

impl AfterCommit {
    /// The bytes of the answer, given the receipt of the commit that stored frame `seq`.
    pub fn encode(self, receipt: &CommitReceipt) -> Result<AckBytes, NotCovered> {
        if receipt.covers(self.seq) {
            Ok(AckBytes(self.reply.to_bytes()))
        } else {
            Err(NotCovered(self.seq))
        }
    }

    /// The frame ticket the answer waits for.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// What to do with a message's answer.
#[derive(Debug)]
pub enum Planned {
    /// No answer (keep-alive, rejected message, `~N`).
    None,
    /// Answer now.
    Immediate(Immediate),
    /// Answer after the frame with this ticket is committed.
    AfterCommit(AfterCommit),
}

/// Sorts an answer by what it promises; `seq` is the frame's ticket.
pub fn plan(reply: Option<Reply>, seq: u64) -> Planned {
    match reply {
        None => Planned::None,
        Some(r) if r.needs_commit() => Planned::AfterCommit(AfterCommit { reply: r, seq }),
        Some(r) => Planned::Immediate(Immediate(r)),
    }
}

/// The write half of a device connection: it only sends [`AckBytes`].
#[derive(Debug)]
pub struct ReplyWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> ReplyWriter<W> {
    /// Wraps a socket's write half.
    pub fn new(inner: W) -> Self {
        ReplyWriter { inner }
    }

    /// Writes one answer completely.
    pub async fn send(&mut self, ack: AckBytes) -> std::io::Result<()> {
        self.inner.write_all(&ack.0).await
    }

    /// Flushes and shuts the write side down.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svoi_proto::reply::NtcbReply;

    #[test]
    fn answers_are_sorted_by_what_they_promise() {
        assert!(matches!(plan(None, 1), Planned::None));
        assert!(matches!(
            plan(Some(Reply::Archive { count: 3 }), 1),
            Planned::AfterCommit(_)
        ));
        assert!(matches!(
            plan(Some(Reply::Current), 1),
            Planned::AfterCommit(_)
        ));
        let handshake = Reply::Ntcb {
            receiver_id: 1,
            sender_id: 0,
            body: NtcbReply::Handshake,
        };
        assert!(matches!(plan(Some(handshake), 1), Planned::Immediate(_)));
    }
}

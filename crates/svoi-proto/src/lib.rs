//! Sans-I/O codec for the Navtelecom NTCB/FLEX protocol.
//!
//! The crate turns bytes into messages and messages into bytes; it never touches a socket, a
//! clock or a thread. A server appends what it reads to a buffer and feeds it to a
//! [`Session`]; each decoded [`Message`] carries the exact [`Reply`] the device expects, which
//! the server sends once the message's data is stored. [`encode`] builds every device message
//! for simulators and tests.
//!
//! A server's read loop, in short:
//!
//! ```
//! use svoi_proto::{Session, Step, encode};
//!
//! let mut session = Session::default();
//! // What the device sent so far: its handshake, and half of a keep-alive packet.
//! let mut buf = encode::handshake(0, 1, "862531046180935")?;
//! let keepalive = encode::keepalive(0, 1)?;
//! buf.extend_from_slice(&keepalive[..8]);
//! let mut replies = Vec::new();
//! while let Step::Message(m) = session.decode(&buf) {
//!     // A real server stores the message's data first when `reply.needs_commit()`.
//!     if let Some(reply) = m.reply {
//!         reply.encode_into(&mut replies);
//!     }
//!     buf.drain(..m.len);
//! }
//! assert_eq!(session.identity().map(|i| i.imei.as_str()), Some("862531046180935"));
//! assert_eq!(hex::encode(&replies), "404e544300000000010000000300455e2a3c53");
//! assert_eq!(buf.len(), 8, "the cut packet waits for more bytes");
//! # Ok::<(), svoi_proto::EncodeError>(())
//! ```

pub mod checksum;
pub mod dictionary;
pub mod encode;
pub mod error;
pub mod flex;
pub mod json;
pub mod mask;
pub mod ntcb;
pub mod record;
pub mod reply;
pub mod session;
pub mod version;

pub use error::{DecodeError, EncodeError};
pub use mask::{FieldMask, RecordLayout};
pub use record::{Core, ExtRecord, Record};
pub use reply::Reply;
pub use session::{Body, Message, Messages, Session, SessionConfig, Step};

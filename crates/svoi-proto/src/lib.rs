//! Sans-I/O codec for the Navtelecom NTCB/FLEX protocol.
//!
//! The crate turns bytes into messages and messages into bytes; it never touches a socket, a
//! clock or a thread. A server appends what it reads to a buffer and feeds it to a
//! [`Session`]; each decoded [`Message`] carries the exact [`Reply`] the device expects, which
//! the server sends once the message's data is stored. [`encode`] builds every device message
//! for simulators and tests.

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

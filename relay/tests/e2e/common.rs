//! The harness is the test kit (`hush-testkit`): the real relay binary as a process, raw
//! protocol test accounts, and a hostile client's tools.

pub use hush_testkit::attacks::*;
pub use hush_testkit::protocol::*;
pub use hush_testkit::relay::*;

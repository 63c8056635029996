//! The node proxy (kube-proxy's job): makes Services reachable. Being built in pieces
//! (issue 6); so far:
//!
//! - [`forward`]: listeners and TCP/UDP forwarding to backends, kept in sync with a
//!   desired table.

pub mod forward;

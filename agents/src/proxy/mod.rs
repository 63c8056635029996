//! The node proxy (kube-proxy's job): makes Services reachable. Being built in pieces
//! (issue 6); so far:
//!
//! - [`forward`]: listeners and TCP/UDP forwarding to backends, kept in sync with a
//!   desired table.
//! - [`table`]: that table, from Services, EndpointSlices and manual Endpoints.

pub mod forward;
pub mod table;

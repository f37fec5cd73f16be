//! A simulated call-center queue: incoming calls are offered to operators the way the
//! pipeline offers tasks to bots.
//!
//! # Layout
//!
//! - [`command`]: the four commands and the ids they name, parsed from typed lines; also
//!   the JSON request shape, and what a typed line asks of the interpreter (`exit`).
//! - [`queue`]: the pure state machine. It takes `now` as an argument and returns the
//!   messages to print, so the rules are tested without sockets or sleeps.
//! - [`protocol`]: the protocol between the interpreter and the queue manager: requests
//!   read as a stream of JSON objects, one reply line per request (`docs/callcenter.md`).
//! - [`server`]: the queue manager. One task owns the queue and its ring timer;
//!   [`server::run`] serves TCP clients until a cancellation token fires.
//! - [`client`]: the command interpreter, over TCP or (`--local`) against an in-process
//!   queue manager, so both modes print the same thing.
//! - `src/bin/`: thin binaries, `callcenter-server` and `callcenter`, that parse flags and
//!   call into the library.

pub mod client;
pub mod command;
pub mod protocol;
pub mod queue;
pub mod server;

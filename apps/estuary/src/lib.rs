//! The `estuary` binary's application: the chat rooms, their pages and the
//! HTTP push API, configured from a file, `ESTUARY_*` variables and flags.

pub mod announce;
pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod events;
pub mod pages;
pub mod posts;
pub mod push;
pub mod rooms;
pub mod usernames;

//! The `estuary` command (`estuary serve`, `estuary check-config`): the chat
//! rooms, their pages and the HTTP push API, configured from a file,
//! `ESTUARY_*` variables and flags. [`serve`] builds and runs the server.

pub mod access;
pub mod activation;
pub mod announce;
pub mod auth;
pub mod chat;
pub mod config;
pub mod events;
pub mod metrics;
pub mod online;
pub mod pages;
pub mod posts;
pub mod push;
pub mod rooms;
pub mod serve;
pub mod usernames;

//! sea-orm entities: the rows as stored. Statuses and systems are stored as their names and
//! parsed into broker-config's types where they are read ([`crate::bots`], [`crate::tasks`],
//! the pipeline).

pub mod attendance;
pub mod attendance_service;
pub mod bot;
pub mod task;
pub mod task_event;

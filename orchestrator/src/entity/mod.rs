//! sea-orm entities: the rows as stored. Statuses and a bot's delivery are typed columns
//! (broker-config's enums, stored as their names); a task's system is a name (text), as systems
//! are data (`systems`). The storage functions over them are [`crate::store`].

pub mod attendance;
pub mod attendance_service;
pub mod bot;
pub mod system;
pub mod task;
pub mod task_event;

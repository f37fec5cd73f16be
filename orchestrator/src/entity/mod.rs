//! sea-orm entities: the rows as stored. Statuses and a bot's delivery are typed columns
//! (broker-config's enums, stored as their names); systems stay names (text), as they are to
//! become data. The storage functions over them are [`crate::store`].

pub mod attendance;
pub mod attendance_service;
pub mod bot;
pub mod task;
pub mod task_event;

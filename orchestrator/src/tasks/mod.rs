//! Tasks as the API speaks of them: what a client sends ([`request`]), what it is shown
//! ([`view`]) and which status changes a client may ask for ([`transitions`]). All of it is pure;
//! how tasks are stored is [`crate::store::tasks`], and the life a bot gives them (offers,
//! reports, sweeps) is [`crate::pipeline`].

pub mod request;
pub mod transitions;
pub mod view;

pub use request::{
    BulkTaskRequest, BulkTasks, DEFAULT_MAX_ATTEMPTS, MAX_BULK_TASKS, MAX_DESCRIPTION_CHARS,
    TaskPatch, TaskRequest, TaskSpec,
};
// A task's bounds are its system's defaults' bounds too: they live with systems.
pub use crate::systems::{MAX_MAX_ATTEMPTS, MAX_RUN_SECONDS};
pub use transitions::{Reporter, check_user_transition, is_editable, report_of_write};
pub use view::{EventKind, Progress, Task, TaskEvent, corrupt};

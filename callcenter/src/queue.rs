//! The call-center queue as a pure state machine: no I/O, no clock.
//!
//! Every method that can start or end a ring takes `now`, and [`CallQueue::expire`] turns
//! the rings whose time is up into "ignored" events, so tests drive time by hand and the
//! server drives it with a timer on [`CallQueue::next_deadline`].
//!
//! Delivery follows one rule everywhere: a call goes to the first available operator in
//! configured order, or waits in FIFO order when none is available. Invariant: calls wait
//! only while no operator is available, so an operator who becomes available takes the
//! first waiting call at once. A rejected or ignored call is delivered again ahead of the
//! waiting ones: to another available operator if there is one, otherwise to the same
//! operator, whose phone rings again.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::command::{CallId, Command, IdError, OperatorId};

/// Something that happened in the call center: each is one line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new call arrived.
    Received {
        /// The new call.
        call: CallId,
    },
    /// A call started ringing for an operator.
    Ringing {
        /// The ringing call.
        call: CallId,
        /// Who it rings for.
        operator: OperatorId,
    },
    /// No operator was available: the call waits in the queue.
    Waiting {
        /// The waiting call.
        call: CallId,
    },
    /// An operator answered the call ringing for them and is now busy.
    Answered {
        /// The answered call.
        call: CallId,
        /// Who answered it.
        operator: OperatorId,
    },
    /// An operator turned the ringing call down.
    Rejected {
        /// The rejected call.
        call: CallId,
        /// Who rejected it.
        operator: OperatorId,
    },
    /// An answered call ended and its operator is available.
    Finished {
        /// The call that ended.
        call: CallId,
        /// The operator it frees.
        operator: OperatorId,
    },
    /// The caller hung up before anyone answered.
    Missed {
        /// The call that was never answered.
        call: CallId,
    },
    /// A call rang for the whole ring timeout without an answer.
    Ignored {
        /// The unanswered call.
        call: CallId,
        /// Who let it ring.
        operator: OperatorId,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Received { call } => write!(f, "Call {call} received"),
            Self::Ringing { call, operator } => {
                write!(f, "Call {call} ringing for operator {operator}")
            }
            Self::Waiting { call } => write!(f, "Call {call} waiting in queue"),
            Self::Answered { call, operator } => {
                write!(f, "Call {call} answered by operator {operator}")
            }
            Self::Rejected { call, operator } => {
                write!(f, "Call {call} rejected by operator {operator}")
            }
            Self::Finished { call, operator } => {
                write!(f, "Call {call} finished and operator {operator} available")
            }
            Self::Missed { call } => write!(f, "Call {call} missed"),
            Self::Ignored { call, operator } => {
                write!(f, "Call {call} ignored by operator {operator}")
            }
        }
    }
}

/// A command the queue refuses; the queue is left exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// No operator has this id.
    #[error("unknown operator {0}")]
    UnknownOperator(OperatorId),
    /// `answer` or `reject` by an operator whose phone is not ringing.
    #[error("operator {0} has no ringing call")]
    NotRinging(OperatorId),
    /// `call` with the id of a call that is still ringing, waiting or in progress.
    #[error("call {0} is already active")]
    DuplicateCall(CallId),
    /// `hangup` of a call that is not active: never placed, or already over.
    #[error("unknown call {0}")]
    UnknownCall(CallId),
}

/// Why an operator list or ring timeout given as configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The list names no operator.
    #[error("at least one operator is needed")]
    NoOperators,
    /// The list names an operator twice.
    #[error("operator {0} is listed twice")]
    DuplicateOperator(OperatorId),
    /// An operator id in the list is invalid.
    #[error("invalid operator id: {0}")]
    InvalidOperator(#[from] IdError),
    /// The ring timeout is not a number of seconds in range.
    #[error(
        "the ring timeout must be a number of seconds above 0 and at most {}",
        RingTimeout::MAX.as_secs()
    )]
    InvalidRingTimeout,
}

/// The operators of a call center, in the order calls are offered to them: non-empty,
/// without duplicates. Parses from a comma-separated list such as `A,B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operators(Vec<OperatorId>);

impl Operators {
    /// Checks that `ids` is non-empty and names each operator once.
    pub fn new(ids: Vec<OperatorId>) -> Result<Self, ConfigError> {
        if ids.is_empty() {
            return Err(ConfigError::NoOperators);
        }
        let mut seen = HashSet::new();
        if let Some(twice) = ids.iter().find(|id| !seen.insert(*id)) {
            return Err(ConfigError::DuplicateOperator(twice.clone()));
        }
        Ok(Self(ids))
    }

    /// The operators in configured order.
    pub fn ids(&self) -> &[OperatorId] {
        &self.0
    }
}

impl FromStr for Operators {
    type Err = ConfigError;

    /// Parses `A,B`; spaces around names are allowed (`A, B`).
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let ids = list
            .split(',')
            .map(|name| OperatorId::parse(name.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(ids)
    }
}

/// How long a call may ring before it counts as ignored: above zero (a zero timeout would
/// expire every ring the moment it starts, forever) and at most [`RingTimeout::MAX`].
/// Parses from seconds, fractions allowed: `10`, `0.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingTimeout(Duration);

impl RingTimeout {
    /// The longest ring timeout: a day, far beyond any use and far from `Instant` overflow.
    pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);

    /// The timeout the spec asks for when none is configured.
    pub const DEFAULT: Self = Self(Duration::from_secs(10));

    /// Checks that `duration` is above zero and at most [`RingTimeout::MAX`].
    pub fn new(duration: Duration) -> Result<Self, ConfigError> {
        if duration.is_zero() || duration > Self::MAX {
            return Err(ConfigError::InvalidRingTimeout);
        }
        Ok(Self(duration))
    }

    /// The timeout as a duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for RingTimeout {
    type Err = ConfigError;

    fn from_str(seconds: &str) -> Result<Self, Self::Err> {
        let seconds: f64 = seconds.trim().parse().map_err(|_| ConfigError::InvalidRingTimeout)?;
        let duration =
            Duration::try_from_secs_f64(seconds).map_err(|_| ConfigError::InvalidRingTimeout)?;
        Self::new(duration)
    }
}

/// What an operator is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorState {
    /// Free to take a call.
    Available,
    /// A call rings for the operator until `deadline`, when it counts as ignored.
    Ringing {
        /// The ringing call.
        call: CallId,
        /// When the ring times out.
        deadline: Instant,
    },
    /// On an answered call.
    Busy {
        /// The call in progress.
        call: CallId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Operator {
    id: OperatorId,
    state: OperatorState,
}

/// The queue manager's whole state: each operator's state and the waiting calls.
///
/// Calls are found by scanning the operators and the queue: a simulated call center has a
/// handful of operators, and one source of truth beats an index that could disagree.
/// A call's id is forgotten when the call ends, so it may be used again afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallQueue {
    /// In configured order, which is the order calls are offered in.
    operators: Vec<Operator>,
    /// Calls no operator could take yet, oldest first.
    waiting: VecDeque<CallId>,
    ring_timeout: Duration,
}

impl CallQueue {
    /// A call center with every operator available and no call.
    pub fn new(operators: &Operators, ring_timeout: RingTimeout) -> Self {
        Self {
            operators: operators
                .ids()
                .iter()
                .map(|id| Operator { id: id.clone(), state: OperatorState::Available })
                .collect(),
            waiting: VecDeque::new(),
            ring_timeout: ring_timeout.duration(),
        }
    }

    /// The state of operator `id`, if there is such an operator.
    pub fn operator_state(&self, id: &OperatorId) -> Option<&OperatorState> {
        self.operators.iter().find(|operator| &operator.id == id).map(|operator| &operator.state)
    }

    /// The calls waiting for an operator, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = &CallId> {
        self.waiting.iter()
    }

    /// Carries out `command` at time `now` and returns what happened, in order.
    ///
    /// Expired rings are not handled here: call [`CallQueue::expire`] first so that a
    /// command never acts on a ring that has already timed out.
    pub fn apply(&mut self, command: Command, now: Instant) -> Result<Vec<Event>, QueueError> {
        match command {
            Command::Call(call) => self.receive(call, now),
            Command::Answer(operator) => self.answer(&operator),
            Command::Reject(operator) => self.reject(&operator, now),
            Command::Hangup(call) => self.hang_up(&call, now),
        }
    }

    /// Turns every ring whose deadline is at or before `now` into an "ignored" event and
    /// delivers that call again, as after a reject. Rings expire earliest first, ties in
    /// configured operator order.
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some((index, call)) = self.stop_earliest_expired_ring(now) {
            events.push(Event::Ignored {
                call: call.clone(),
                operator: self.operators[index].id.clone(),
            });
            // Terminates: the new ring's deadline is `now + ring_timeout`, after `now`.
            events.push(self.deliver_again(index, call, now));
        }
        events
    }

    /// The earliest moment a ring times out, if any call is ringing.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.operators
            .iter()
            .filter_map(|operator| match operator.state {
                OperatorState::Ringing { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    fn receive(&mut self, call: CallId, now: Instant) -> Result<Vec<Event>, QueueError> {
        if self.is_active(&call) {
            return Err(QueueError::DuplicateCall(call));
        }
        let mut events = vec![Event::Received { call: call.clone() }];
        match self.first_available(None) {
            Some(index) => events.push(self.ring(index, call, now)),
            None => {
                events.push(Event::Waiting { call: call.clone() });
                self.waiting.push_back(call);
            }
        }
        Ok(events)
    }

    fn answer(&mut self, operator: &OperatorId) -> Result<Vec<Event>, QueueError> {
        let (index, call) = self.stop_ringing(operator)?;
        self.operators[index].state = OperatorState::Busy { call: call.clone() };
        Ok(vec![Event::Answered { call, operator: operator.clone() }])
    }

    fn reject(&mut self, operator: &OperatorId, now: Instant) -> Result<Vec<Event>, QueueError> {
        let (index, call) = self.stop_ringing(operator)?;
        let rejected = Event::Rejected { call: call.clone(), operator: operator.clone() };
        Ok(vec![rejected, self.deliver_again(index, call, now)])
    }

    fn hang_up(&mut self, call: &CallId, now: Instant) -> Result<Vec<Event>, QueueError> {
        if let Some(position) = self.waiting.iter().position(|waiting| waiting == call) {
            self.waiting.remove(position);
            return Ok(vec![Event::Missed { call: call.clone() }]);
        }
        let index =
            self.operator_on_call(call).ok_or_else(|| QueueError::UnknownCall(call.clone()))?;
        let operator = &mut self.operators[index];
        let ended = match operator.state {
            OperatorState::Busy { .. } => {
                Event::Finished { call: call.clone(), operator: operator.id.clone() }
            }
            _ => Event::Missed { call: call.clone() },
        };
        operator.state = OperatorState::Available;
        let mut events = vec![ended];
        events.extend(self.offer_waiting_call(index, now));
        Ok(events)
    }

    fn is_active(&self, call: &CallId) -> bool {
        self.waiting.contains(call) || self.operator_on_call(call).is_some()
    }

    /// The operator for whom `call` rings or who is on it.
    fn operator_on_call(&self, call: &CallId) -> Option<usize> {
        self.operators.iter().position(|operator| match &operator.state {
            OperatorState::Ringing { call: current, .. }
            | OperatorState::Busy { call: current } => current == call,
            OperatorState::Available => false,
        })
    }

    /// The first available operator in configured order, skipping `except`.
    fn first_available(&self, except: Option<usize>) -> Option<usize> {
        (0..self.operators.len()).find(|&index| {
            Some(index) != except && self.operators[index].state == OperatorState::Available
        })
    }

    /// Makes operator `id`, whose phone must be ringing, available again, and returns
    /// their index and the call that was ringing.
    fn stop_ringing(&mut self, id: &OperatorId) -> Result<(usize, CallId), QueueError> {
        let index = self
            .operators
            .iter()
            .position(|operator| &operator.id == id)
            .ok_or_else(|| QueueError::UnknownOperator(id.clone()))?;
        let operator = &mut self.operators[index];
        let OperatorState::Ringing { call, .. } = &operator.state else {
            return Err(QueueError::NotRinging(id.clone()));
        };
        let call = call.clone();
        operator.state = OperatorState::Available;
        Ok((index, call))
    }

    fn ring(&mut self, index: usize, call: CallId, now: Instant) -> Event {
        let operator = &mut self.operators[index];
        operator.state =
            OperatorState::Ringing { call: call.clone(), deadline: now + self.ring_timeout };
        Event::Ringing { call, operator: operator.id.clone() }
    }

    /// Delivers a rejected or ignored call ahead of the waiting ones: to another available
    /// operator if there is one, else again to operator `index`, who just let it go.
    fn deliver_again(&mut self, index: usize, call: CallId, now: Instant) -> Event {
        let target = self.first_available(Some(index)).unwrap_or(index);
        self.ring(target, call, now)
    }

    /// Operator `index` just became available: the oldest waiting call rings for them.
    fn offer_waiting_call(&mut self, index: usize, now: Instant) -> Option<Event> {
        let call = self.waiting.pop_front()?;
        Some(self.ring(index, call, now))
    }

    /// Stops the ring with the earliest deadline at or before `now` (ties in configured
    /// order) and returns the operator's index and the call.
    fn stop_earliest_expired_ring(&mut self, now: Instant) -> Option<(usize, CallId)> {
        let (_, index, call) = self
            .operators
            .iter()
            .enumerate()
            .filter_map(|(index, operator)| match &operator.state {
                OperatorState::Ringing { call, deadline } if *deadline <= now => {
                    Some((*deadline, index, call))
                }
                _ => None,
            })
            .min_by_key(|&(deadline, index, _)| (deadline, index))?;
        let call = call.clone();
        self.operators[index].state = OperatorState::Available;
        Some((index, call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::error_line;

    const SCRIPT: &str = include_str!("../tests/fixtures/seven_calls.txt");
    const EXPECTED_STDOUT: &str = include_str!("../tests/fixtures/seven_calls.stdout");
    const EXPECTED_STDERR: &str = include_str!("../tests/fixtures/seven_calls.stderr");

    fn queue(operators: &str, timeout_seconds: u64) -> CallQueue {
        let operators = operators.parse().expect("valid operator list");
        let timeout =
            RingTimeout::new(Duration::from_secs(timeout_seconds)).expect("valid ring timeout");
        CallQueue::new(&operators, timeout)
    }

    fn command(line: &str) -> Command {
        Command::parse_line(line).expect("valid command").expect("not blank")
    }

    /// Applies `line` and returns the messages it produced.
    fn run(queue: &mut CallQueue, line: &str, now: Instant) -> Vec<String> {
        let events = queue.apply(command(line), now).expect("command accepted");
        events.iter().map(ToString::to_string).collect()
    }

    fn lines(messages: &[&str]) -> Vec<String> {
        messages.iter().map(|message| (*message).to_owned()).collect()
    }

    fn operator(id: &str) -> OperatorId {
        OperatorId::parse(id).expect("valid operator")
    }

    #[test]
    fn seven_call_scenario_matches_the_transcript() {
        let mut queue = queue("A,B", 10);
        let now = Instant::now();
        let (mut stdout, mut stderr) = (String::new(), String::new());
        for line in SCRIPT.lines() {
            let before = queue.clone();
            let outcome =
                Command::parse_line(line).map_err(|error| error.to_string()).and_then(|command| {
                    let command = command.expect("the script has no blank line");
                    queue.apply(command, now).map_err(|error| error.to_string())
                });
            match outcome {
                Ok(events) => {
                    for event in events {
                        stdout.push_str(&format!("{event}\n"));
                    }
                }
                Err(error) => {
                    assert_eq!(queue, before, "{line:?} was refused but changed the queue");
                    stderr.push_str(&format!("{}\n", error_line(&error)));
                }
            }
        }
        assert_eq!(stdout, EXPECTED_STDOUT);
        assert_eq!(stderr, EXPECTED_STDERR);
        // Everyone is free again at the end and nothing rings.
        assert_eq!(queue, self::queue("A,B", 10));
    }

    #[test]
    fn calls_go_to_the_first_available_operator_in_configured_order() {
        let mut queue = queue("B,A", 10);
        let now = Instant::now();
        assert_eq!(
            run(&mut queue, "call x", now),
            lines(&["Call x received", "Call x ringing for operator B"])
        );
        assert_eq!(
            run(&mut queue, "call y", now),
            lines(&["Call y received", "Call y ringing for operator A"])
        );
        assert_eq!(
            run(&mut queue, "call z", now),
            lines(&["Call z received", "Call z waiting in queue"])
        );
    }

    #[test]
    fn waiting_calls_ring_in_fifo_order() {
        let mut queue = queue("A", 10);
        let now = Instant::now();
        run(&mut queue, "call 1", now);
        run(&mut queue, "answer A", now);
        for call in ["2", "3", "4"] {
            run(&mut queue, &format!("call {call}"), now);
        }
        let waiting: Vec<&str> = queue.waiting().map(CallId::as_str).collect();
        assert_eq!(waiting, ["2", "3", "4"]);
        assert_eq!(
            run(&mut queue, "hangup 1", now),
            lines(&["Call 1 finished and operator A available", "Call 2 ringing for operator A",])
        );
        assert_eq!(
            run(&mut queue, "hangup 2", now),
            lines(&["Call 2 missed", "Call 3 ringing for operator A"])
        );
    }

    #[test]
    fn a_rejected_call_goes_ahead_of_waiting_calls() {
        let mut queue = queue("A", 10);
        let now = Instant::now();
        run(&mut queue, "call 1", now);
        run(&mut queue, "call 2", now);
        assert_eq!(
            run(&mut queue, "reject A", now),
            lines(&["Call 1 rejected by operator A", "Call 1 ringing for operator A"])
        );
        let waiting: Vec<&str> = queue.waiting().map(CallId::as_str).collect();
        assert_eq!(waiting, ["2"]);
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut queue = queue("A,B", 10);
        let now = Instant::now();
        run(&mut queue, "call 1", now);
        run(&mut queue, "answer A", now);
        run(&mut queue, "call 2", now);
        let before = queue.clone();
        let refusals = [
            ("answer A", "operator A has no ringing call"),
            ("reject A", "operator A has no ringing call"),
            ("answer Z", "unknown operator Z"),
            ("call 1", "call 1 is already active"),
            ("call 2", "call 2 is already active"),
            ("hangup 3", "unknown call 3"),
        ];
        for (line, message) in refusals {
            let error = queue.apply(command(line), now).expect_err("command is refused");
            assert_eq!(error.to_string(), message);
            assert_eq!(queue, before);
        }
    }

    #[test]
    fn an_ended_call_id_can_be_used_again() {
        let mut queue = queue("A", 10);
        let now = Instant::now();
        run(&mut queue, "call 1", now);
        run(&mut queue, "hangup 1", now);
        assert_eq!(
            run(&mut queue, "call 1", now),
            lines(&["Call 1 received", "Call 1 ringing for operator A"])
        );
    }

    #[test]
    fn an_unanswered_ring_is_ignored_after_the_timeout() {
        let mut queue = queue("A,B", 10);
        let start = Instant::now();
        run(&mut queue, "call 1", start);
        assert_eq!(queue.next_deadline(), Some(start + Duration::from_secs(10)));
        assert!(queue.expire(start + Duration::from_millis(9_999)).is_empty());

        let first_timeout = start + Duration::from_secs(10);
        let events: Vec<String> =
            queue.expire(first_timeout).iter().map(ToString::to_string).collect();
        assert_eq!(
            events,
            lines(&["Call 1 ignored by operator A", "Call 1 ringing for operator B"])
        );
        assert_eq!(queue.operator_state(&operator("A")), Some(&OperatorState::Available));
        // The new ring gets a full timeout from the moment it starts.
        assert_eq!(queue.next_deadline(), Some(first_timeout + Duration::from_secs(10)));
        assert!(queue.expire(first_timeout).is_empty());

        // Answered in time, the call no longer times out.
        run(&mut queue, "answer B", first_timeout + Duration::from_secs(5));
        assert_eq!(queue.next_deadline(), None);
        assert!(queue.expire(first_timeout + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn an_ignored_call_rings_again_for_the_only_free_operator() {
        let mut queue = queue("A,B", 10);
        let start = Instant::now();
        run(&mut queue, "call 1", start);
        run(&mut queue, "answer A", start);
        run(&mut queue, "call 2", start);
        run(&mut queue, "call 3", start);
        let events: Vec<String> =
            queue.expire(start + Duration::from_secs(10)).iter().map(ToString::to_string).collect();
        assert_eq!(
            events,
            lines(&["Call 2 ignored by operator B", "Call 2 ringing for operator B"])
        );
        let waiting: Vec<&str> = queue.waiting().map(CallId::as_str).collect();
        assert_eq!(waiting, ["3"]);
    }

    #[test]
    fn simultaneous_timeouts_expire_earliest_first_then_in_configured_order() {
        let mut queue = queue("A,B,C", 10);
        let start = Instant::now();
        run(&mut queue, "call 1", start + Duration::from_secs(1));
        run(&mut queue, "call 2", start);
        // Both rings are overdue. B's (call 2) started first, so it expires first and goes
        // to C, the only other available operator; then call 1 leaves A for B, free again.
        let events: Vec<String> =
            queue.expire(start + Duration::from_secs(30)).iter().map(ToString::to_string).collect();
        assert_eq!(
            events,
            lines(&[
                "Call 2 ignored by operator B",
                "Call 2 ringing for operator C",
                "Call 1 ignored by operator A",
                "Call 1 ringing for operator B",
            ])
        );
    }

    #[test]
    fn configuration_is_validated() {
        assert_eq!("A,B".parse::<Operators>().map(|operators| operators.ids().len()), Ok(2));
        assert_eq!(" A , B ".parse::<Operators>(), "A,B".parse());
        assert_eq!(
            "A,B,A".parse::<Operators>(),
            Err(ConfigError::DuplicateOperator(operator("A")))
        );
        assert_eq!("A,".parse::<Operators>(), Err(ConfigError::InvalidOperator(IdError::Empty)));
        assert_eq!(Operators::new(Vec::new()), Err(ConfigError::NoOperators));

        assert_eq!(
            "0.5".parse::<RingTimeout>().map(RingTimeout::duration),
            Ok(Duration::from_millis(500))
        );
        for bad in ["0", "-1", "abc", "NaN", "inf", "86401"] {
            assert_eq!(bad.parse::<RingTimeout>(), Err(ConfigError::InvalidRingTimeout), "{bad}");
        }
    }
}

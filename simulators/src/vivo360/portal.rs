//! The portal's state machine: sessions, form tokens with their drafts, users, submission
//! counts and failure-injection settings. No IO: tokens, the failure roll and `now` are passed
//! in, so every rule is tested without a socket.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::user::{Draft, Field, InvalidField, NewUser, Profile};
use crate::control::Availability;

/// A failure-injection setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidSetting {
    /// `fail_rate` is a probability, so it lies within 0 and 1.
    #[error("fail_rate must be between 0 and 1, got {0}")]
    FailRate(f64),
}

/// The portal's failure injection; serialises as the control API's
/// `{"down","delay_ms","fail_rate","fail_logins"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Settings {
    #[serde(flatten)]
    pub availability: Availability,
    /// The probability that a user submission fails with 500.
    fail_rate: f64,
    /// Logins whose submissions always fail with 500.
    fail_logins: BTreeSet<String>,
}

/// A change to some of the [`Settings`] (`PUT /_control`); absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsUpdate {
    pub down: Option<bool>,
    pub delay_ms: Option<u64>,
    pub fail_rate: Option<f64>,
    pub fail_logins: Option<Vec<String>>,
}

impl Settings {
    /// Applies `update` whole, or not at all when a value is out of range.
    pub(crate) fn apply(&mut self, update: SettingsUpdate) -> Result<(), InvalidSetting> {
        if let Some(rate) = update.fail_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(InvalidSetting::FailRate(rate));
        }
        if let Some(down) = update.down {
            self.availability.down = down;
        }
        if let Some(delay_ms) = update.delay_ms {
            self.availability.delay_ms = delay_ms;
        }
        if let Some(rate) = update.fail_rate {
            self.fail_rate = rate;
        }
        if let Some(logins) = update.fail_logins {
            self.fail_logins = logins
                .iter()
                .map(|login| login.trim().to_owned())
                .filter(|login| !login.is_empty())
                .collect();
        }
        Ok(())
    }

    /// Whether a submission for `login` fails on purpose, given `roll`, a uniform sample of
    /// `[0, 1)`.
    fn fails(&self, login: &str, roll: f64) -> bool {
        self.fail_logins.contains(login) || roll < self.fail_rate
    }
}

/// A user the portal has created, as `GET /_control/users` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct User {
    pub name: String,
    pub email: String,
    pub login: String,
    pub profile: Profile,
    pub created_at: DateTime<Utc>,
}

/// The outcome of a user submission whose form token was good.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Submission {
    /// The user now exists (201).
    Created(User),
    /// A field is missing or invalid (422).
    Invalid(InvalidField),
    /// The login or e-mail belongs to an existing user (409); the message says which.
    Duplicate(String),
    /// Failure injection answered for this submission (500); nothing was created.
    Failed,
}

/// The form token is missing, unknown, already used or another session's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("form expired")]
pub(crate) struct FormExpired;

/// A form handed out by `GET /users/new`: whose it is, and what has been typed into it.
#[derive(Debug)]
struct OpenForm {
    session: String,
    draft: Draft,
}

/// The whole portal.
#[derive(Debug)]
pub(crate) struct Portal {
    username: String,
    password: String,
    pub settings: Settings,
    sessions: HashSet<String>,
    forms: HashMap<String, OpenForm>,
    users: Vec<User>,
    submissions: BTreeMap<String, u64>,
}

impl Portal {
    /// A portal where `username` / `password` is the one account, with no users yet.
    pub(crate) fn new(
        username: String,
        password: String,
        availability: Availability,
        fail_rate: f64,
        fail_logins: Vec<String>,
    ) -> Result<Portal, InvalidSetting> {
        let mut settings = Settings::default();
        settings.apply(SettingsUpdate {
            down: Some(availability.down),
            delay_ms: Some(availability.delay_ms),
            fail_rate: Some(fail_rate),
            fail_logins: Some(fail_logins),
        })?;
        Ok(Portal {
            username,
            password,
            settings,
            sessions: HashSet::new(),
            forms: HashMap::new(),
            users: Vec::new(),
            submissions: BTreeMap::new(),
        })
    }

    /// Opens `session` if the credentials are right.
    pub(crate) fn log_in(&mut self, username: &str, password: &str, session: String) -> bool {
        let valid = username == self.username && password == self.password;
        if valid {
            self.sessions.insert(session);
        }
        valid
    }

    pub(crate) fn is_logged_in(&self, session: &str) -> bool {
        self.sessions.contains(session)
    }

    /// Hands out a blank form under `token` to `session`.
    pub(crate) fn open_form(&mut self, session: &str, token: String) {
        let form = OpenForm { session: session.to_owned(), draft: Draft::default() };
        self.forms.insert(token, form);
    }

    /// Types `value` into `field` of the form `token` (stored whatever its validity, last
    /// value wins) and returns the live validation's verdict.
    pub(crate) fn fill(
        &mut self,
        session: &str,
        token: Option<&str>,
        field: Field,
        value: String,
    ) -> Result<Result<(), &'static str>, FormExpired> {
        let form = token
            .and_then(|token| self.forms.get_mut(token))
            .filter(|form| form.session == session)
            .ok_or(FormExpired)?;
        let verdict = field.check(&value);
        form.draft.set(field, value);
        Ok(verdict)
    }

    /// Submits the form `token` with `overrides` written over its draft, consuming the token
    /// whatever the outcome; returns the login submitted (trimmed, possibly invalid) with the
    /// outcome. Counts the attempt against the login whenever one is known (even when the
    /// token is bad, if the body names the login). `roll` is a uniform sample of `[0, 1)` for
    /// the `fail_rate`.
    pub(crate) fn submit(
        &mut self,
        session: &str,
        token: Option<&str>,
        overrides: Draft,
        roll: f64,
        now: DateTime<Utc>,
    ) -> Result<(String, Submission), FormExpired> {
        let draft = self.take_form(session, token, overrides)?;
        let login = draft.get(Field::Login).unwrap_or_default().trim().to_owned();
        self.count_submission(Some(&login));
        let submission = self.create_user(&draft, &login, roll, now);
        Ok((login, submission))
    }

    /// The draft of the form `token`, with `overrides` written over it, removing the form.
    fn take_form(
        &mut self,
        session: &str,
        token: Option<&str>,
        overrides: Draft,
    ) -> Result<Draft, FormExpired> {
        let form = token
            .filter(|token| self.forms.get(*token).is_some_and(|f| f.session == session))
            .and_then(|token| self.forms.remove(token));
        let Some(form) = form else {
            self.count_submission(overrides.get(Field::Login));
            return Err(FormExpired);
        };
        Ok(form.draft.overlaid_with(overrides))
    }

    /// Creates the user `draft` describes, unless failure injection strikes first or a field
    /// is invalid or taken.
    fn create_user(
        &mut self,
        draft: &Draft,
        login: &str,
        roll: f64,
        now: DateTime<Utc>,
    ) -> Submission {
        if self.settings.fails(login, roll) {
            return Submission::Failed;
        }
        let user = match NewUser::parse(draft) {
            Ok(user) => user,
            Err(invalid) => return Submission::Invalid(invalid),
        };
        if self.users.iter().any(|u| u.login == user.login.as_str()) {
            let message = format!("Login {} already exists", user.login.as_str());
            return Submission::Duplicate(message);
        }
        if self.users.iter().any(|u| user.email.same_as(&u.email)) {
            let message = format!("E-mail {} already exists", user.email.as_str());
            return Submission::Duplicate(message);
        }
        let user = User {
            name: user.name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            login: user.login.as_str().to_owned(),
            profile: user.profile,
            created_at: now,
        };
        self.users.push(user.clone());
        Submission::Created(user)
    }

    fn count_submission(&mut self, login: Option<&str>) {
        if let Some(login) = login.map(str::trim).filter(|login| !login.is_empty()) {
            *self.submissions.entry(login.to_owned()).or_default() += 1;
        }
    }

    /// Users in the order they were created.
    pub(crate) fn users(&self) -> &[User] {
        &self.users
    }

    /// Submission attempts per login.
    pub(crate) fn submissions(&self) -> &BTreeMap<String, u64> {
        &self.submissions
    }

    /// Forgets every user and submission count (sessions and open forms stay).
    pub(crate) fn forget_users(&mut self) {
        self.users.clear();
        self.submissions.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NEVER: f64 = 0.99;

    fn portal() -> Portal {
        let mut portal =
            Portal::new("bot".into(), "secret".into(), Availability::default(), 0.0, vec![])
                .unwrap();
        assert!(portal.log_in("bot", "secret", "s1".into()));
        portal
    }

    fn draft(name: &str, email: &str, login: &str, profile: &str) -> Draft {
        let mut draft = Draft::default();
        draft.set(Field::Name, name.into());
        draft.set(Field::Email, email.into());
        draft.set(Field::Login, login.into());
        draft.set(Field::Profile, profile.into());
        draft
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn only_the_right_credentials_open_a_session() {
        let mut portal = portal();
        assert!(!portal.log_in("bot", "wrong", "s2".into()));
        assert!(!portal.log_in("Bot", "secret", "s3".into()));
        assert!(portal.is_logged_in("s1"));
        assert!(!portal.is_logged_in("s2"));
        assert!(!portal.is_logged_in("s3"));
    }

    #[test]
    fn filled_fields_are_validated_stored_and_submitted() {
        let mut portal = portal();
        portal.open_form("s1", "t1".into());
        assert_eq!(
            portal.fill("s1", Some("t1"), Field::Email, "bad".into()),
            Ok(Err("not a valid e-mail address"))
        );
        for (field, value) in [
            (Field::Name, "Ana Silva"),
            (Field::Email, " ana@example.com "),
            (Field::Login, "ana"),
            (Field::Profile, "agent"),
        ] {
            assert_eq!(portal.fill("s1", Some("t1"), field, value.into()), Ok(Ok(())));
        }
        let outcome = portal.submit("s1", Some("t1"), Draft::default(), NEVER, now());
        let Ok((_, Submission::Created(user))) = outcome else {
            panic!("expected a created user, got {outcome:?}");
        };
        assert_eq!(user.email, "ana@example.com");
        assert_eq!(user.created_at, now());
        assert_eq!(portal.users(), [user]);
        assert_eq!(portal.submissions().get("ana"), Some(&1));
    }

    #[test]
    fn forms_belong_to_their_session_and_serve_once() {
        let mut portal = portal();
        assert!(portal.log_in("bot", "secret", "s2".into()));
        portal.open_form("s1", "t1".into());
        assert_eq!(portal.fill("s2", Some("t1"), Field::Name, "Ana".into()), Err(FormExpired));
        assert_eq!(portal.fill("s1", None, Field::Name, "Ana".into()), Err(FormExpired));
        let body = draft("Ana", "ana@example.com", "ana", "agent");
        assert_eq!(portal.submit("s2", Some("t1"), body.clone(), NEVER, now()), Err(FormExpired));
        // Another session's attempt did not use the form up.
        assert!(matches!(
            portal.submit("s1", Some("t1"), body.clone(), NEVER, now()),
            Ok((_, Submission::Created(_)))
        ));
        assert_eq!(portal.submit("s1", Some("t1"), body, NEVER, now()), Err(FormExpired));
        // Every attempt naming the login counts.
        assert_eq!(portal.submissions().get("ana"), Some(&3));
    }

    #[test]
    fn a_rejected_submission_still_consumes_the_form() {
        let mut portal = portal();
        portal.open_form("s1", "t1".into());
        let outcome = portal.submit("s1", Some("t1"), Draft::default(), NEVER, now());
        let Ok((login, Submission::Invalid(invalid))) = outcome else {
            panic!("expected invalid, got {outcome:?}");
        };
        assert_eq!(invalid.to_string(), "name: missing");
        assert_eq!(login, "");
        let fixed = draft("Ana", "ana@example.com", "ana", "agent");
        assert_eq!(portal.submit("s1", Some("t1"), fixed, NEVER, now()), Err(FormExpired));
        // A submission without a login is not counted against any.
        assert_eq!(portal.submissions().len(), 1);
    }

    #[test]
    fn logins_and_emails_are_unique() {
        let mut portal = portal();
        let mut submit = |token: &str, body: Draft| {
            portal.open_form("s1", token.into());
            let (_, outcome) = portal.submit("s1", Some(token), body, NEVER, now()).unwrap();
            outcome
        };
        assert!(matches!(
            submit("t1", draft("Ana", "ana@example.com", "ana", "agent")),
            Submission::Created(_)
        ));
        assert_eq!(
            submit("t2", draft("Ana B", "other@example.com", "ana", "agent")),
            Submission::Duplicate("Login ana already exists".into())
        );
        assert_eq!(
            submit("t3", draft("Ana C", "ANA@example.com", "ana.c", "agent")),
            Submission::Duplicate("E-mail ANA@example.com already exists".into())
        );
    }

    #[test]
    fn injected_failures_create_nothing() {
        let mut portal = portal();
        portal
            .settings
            .apply(SettingsUpdate {
                fail_logins: Some(vec![" bob ".into()]),
                fail_rate: Some(0.5),
                ..SettingsUpdate::default()
            })
            .unwrap();
        for (token, login, roll, failed) in
            [("t1", "bob", NEVER, true), ("t2", "ana", 0.49, true), ("t3", "ana", 0.5, false)]
        {
            portal.open_form("s1", token.into());
            let body = draft("Someone", &format!("{login}@example.com"), login, "agent");
            let (submitted, outcome) = portal.submit("s1", Some(token), body, roll, now()).unwrap();
            assert_eq!(submitted, login);
            assert_eq!(outcome == Submission::Failed, failed, "{token}");
        }
        assert_eq!(portal.users().len(), 1);
        assert_eq!(portal.users()[0].login, "ana");
        assert_eq!(portal.submissions().get("bob"), Some(&1));
        assert_eq!(portal.submissions().get("ana"), Some(&2));
    }

    #[test]
    fn settings_reject_a_rate_outside_zero_to_one_and_change_nothing() {
        let mut settings = Settings::default();
        let update =
            SettingsUpdate { down: Some(true), fail_rate: Some(1.5), ..SettingsUpdate::default() };
        assert_eq!(settings.apply(update), Err(InvalidSetting::FailRate(1.5)));
        assert_eq!(settings, Settings::default());
        let update =
            SettingsUpdate { fail_rate: Some(1.0), delay_ms: Some(5), ..SettingsUpdate::default() };
        settings.apply(update).unwrap();
        assert_eq!(settings.fail_rate, 1.0);
        assert_eq!(settings.availability.delay_ms, 5);
        assert!(!settings.availability.down);
    }
}

//! The user form's fields and their validation, parsed into types at the edge so the portal
//! only ever stores a user whose every field is valid.
//!
//! Values are trimmed before they are checked. A reason is a short phrase the portal shows
//! after the field's name: `email: not a valid e-mail address`.

use std::collections::BTreeMap;

use serde::Serialize;

/// The reason for an empty field.
const MISSING: &str = "missing";

/// One of the user form's fields, in the order the form shows them (and reports the first
/// invalid one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Field {
    Name,
    Email,
    Login,
    Profile,
}

impl Field {
    /// The field's name in the form and in URLs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Email => "email",
            Field::Login => "login",
            Field::Profile => "profile",
        }
    }

    /// The field called `name`, if the form has one.
    pub(crate) fn parse(name: &str) -> Option<Field> {
        match name {
            "name" => Some(Field::Name),
            "email" => Some(Field::Email),
            "login" => Some(Field::Login),
            "profile" => Some(Field::Profile),
            _ => None,
        }
    }

    /// Checks `value` the way the form's live validation does: `Err` holds the reason.
    pub(crate) fn check(self, value: &str) -> Result<(), &'static str> {
        match self {
            Field::Name => PersonName::parse(value).map(drop),
            Field::Email => Email::parse(value).map(drop),
            Field::Login => Login::parse(value).map(drop),
            Field::Profile => Profile::parse(value).map(drop),
        }
    }
}

/// A field that failed validation; displays as `field: reason`, the portal's error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", field.as_str())]
pub(crate) struct InvalidField {
    pub field: Field,
    pub reason: &'static str,
}

/// A person's name: 2 to 100 letters (accented ones included), spaces, apostrophes, hyphens
/// and dots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PersonName(String);

impl PersonName {
    pub(crate) fn parse(value: &str) -> Result<PersonName, &'static str> {
        let value = non_empty(value)?;
        if !(2..=100).contains(&value.chars().count()) {
            return Err("must be 2 to 100 characters");
        }
        // U+0300..U+036F are the combining accents of a decomposed (NFD) letter such as
        // "e\u{301}", which is still an accented letter.
        let allowed = |c: char| {
            c.is_alphabetic()
                || matches!(c, ' ' | '\'' | '’' | '-' | '.')
                || ('\u{300}'..='\u{36f}').contains(&c)
        };
        if !value.chars().all(allowed) {
            return Err("may contain only letters, spaces, apostrophes, hyphens and dots");
        }
        Ok(PersonName(value.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address shaped `local@domain.tld`: one `@`, something before it, a domain of at
/// least two non-empty dot-separated labels, no whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email(String);

impl Email {
    pub(crate) fn parse(value: &str) -> Result<Email, &'static str> {
        const INVALID: &str = "not a valid e-mail address";
        let value = non_empty(value)?;
        let (local, domain) = value.split_once('@').ok_or(INVALID)?;
        let well_formed = !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && domain.split('.').all(|label| !label.is_empty())
            && !value.chars().any(char::is_whitespace);
        if !well_formed {
            return Err(INVALID);
        }
        Ok(Email(value.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is the same mailbox: e-mail addresses are compared without regard to
    /// case, as mail systems do in practice.
    pub(crate) fn same_as(&self, other: &str) -> bool {
        self.0.to_lowercase() == other.to_lowercase()
    }
}

/// A login: 3 to 32 characters of `a-z`, `0-9`, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login(String);

impl Login {
    pub(crate) fn parse(value: &str) -> Result<Login, &'static str> {
        let value = non_empty(value)?;
        if !(3..=32).contains(&value.chars().count()) {
            return Err("must be 3 to 32 characters");
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if !value.chars().all(allowed) {
            return Err(
                "may contain only lowercase letters a-z, digits, dots, underscores and hyphens",
            );
        }
        Ok(Login(value.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The user's access profile, one of the form's select options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Profile {
    Agent,
    Supervisor,
    Admin,
}

impl Profile {
    /// Every profile, in the order the form's select lists them.
    pub(crate) const ALL: [Profile; 3] = [Profile::Agent, Profile::Supervisor, Profile::Admin];

    pub(crate) fn parse(value: &str) -> Result<Profile, &'static str> {
        let value = non_empty(value)?;
        Profile::ALL
            .into_iter()
            .find(|profile| profile.as_str() == value)
            .ok_or("must be one of agent, supervisor, admin")
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Profile::Agent => "agent",
            Profile::Supervisor => "supervisor",
            Profile::Admin => "admin",
        }
    }
}

/// `value` trimmed, or the "missing" reason.
fn non_empty(value: &str) -> Result<&str, &'static str> {
    match value.trim() {
        "" => Err(MISSING),
        trimmed => Ok(trimmed),
    }
}

/// The values typed into one form so far, as typed (last value wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Draft(BTreeMap<Field, String>);

impl Draft {
    pub(crate) fn set(&mut self, field: Field, value: String) {
        self.0.insert(field, value);
    }

    pub(crate) fn get(&self, field: Field) -> Option<&str> {
        self.0.get(&field).map(String::as_str)
    }

    /// This draft with every value of `overrides` written over it.
    pub(crate) fn overlaid_with(mut self, overrides: Draft) -> Draft {
        self.0.extend(overrides.0);
        self
    }
}

/// A user whose every field is valid, ready to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewUser {
    pub name: PersonName,
    pub email: Email,
    pub login: Login,
    pub profile: Profile,
}

impl NewUser {
    /// Validates a draft, reporting the first invalid field in form order.
    pub(crate) fn parse(draft: &Draft) -> Result<NewUser, InvalidField> {
        let value = |field| draft.get(field).unwrap_or_default();
        let invalid = |field| move |reason| InvalidField { field, reason };
        Ok(NewUser {
            name: PersonName::parse(value(Field::Name)).map_err(invalid(Field::Name))?,
            email: Email::parse(value(Field::Email)).map_err(invalid(Field::Email))?,
            login: Login::parse(value(Field::Login)).map_err(invalid(Field::Login))?,
            profile: Profile::parse(value(Field::Profile)).map_err(invalid(Field::Profile))?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_letters_accents_and_punctuation() {
        for name in [
            "Jo",
            "Ana Maria",
            "João D'Ávila",
            "Jean-Luc Picard Jr.",
            "Zoë O’Neil",
            "Jose\u{301}",
            "  Ed  ",
        ] {
            assert!(PersonName::parse(name).is_ok(), "{name}");
        }
        assert_eq!(PersonName::parse("  Ed ").map(|n| n.0), Ok("Ed".to_owned()));
    }

    #[test]
    fn names_reject_bad_lengths_and_characters() {
        assert_eq!(PersonName::parse("   "), Err(MISSING));
        assert_eq!(PersonName::parse("J"), Err("must be 2 to 100 characters"));
        assert!(PersonName::parse(&"a".repeat(100)).is_ok());
        assert_eq!(PersonName::parse(&"a".repeat(101)), Err("must be 2 to 100 characters"));
        for name in ["R2D2", "Ana_Maria", "Ana@x", "Ana\tMaria"] {
            assert_eq!(
                PersonName::parse(name),
                Err("may contain only letters, spaces, apostrophes, hyphens and dots"),
                "{name}"
            );
        }
    }

    #[test]
    fn emails_need_one_at_and_a_dotted_domain() {
        assert_eq!(
            Email::parse(" ana@example.com ").map(|e| e.0),
            Ok("ana@example.com".to_owned())
        );
        assert!(Email::parse("a.b+tag@mail.example.co").is_ok());
        assert_eq!(Email::parse(""), Err(MISSING));
        for email in [
            "ana",
            "ana@example",
            "@example.com",
            "ana@@example.com",
            "ana@b@example.com",
            "ana maria@example.com",
            "ana@example.",
            "ana@.com",
            "ana@example..com",
        ] {
            assert_eq!(Email::parse(email), Err("not a valid e-mail address"), "{email}");
        }
    }

    #[test]
    fn emails_compare_without_case() {
        let email = Email::parse("Ana@Example.com").unwrap();
        assert!(email.same_as("ana@example.COM"));
        assert!(!email.same_as("ana2@example.com"));
    }

    #[test]
    fn logins_are_short_lowercase_identifiers() {
        for login in ["ana", "ana.silva", "a_b-c.9", &"a".repeat(32)] {
            assert!(Login::parse(login).is_ok(), "{login}");
        }
        assert_eq!(Login::parse(" "), Err(MISSING));
        assert_eq!(Login::parse("ab"), Err("must be 3 to 32 characters"));
        assert_eq!(Login::parse(&"a".repeat(33)), Err("must be 3 to 32 characters"));
        for login in ["Ana", "ana silva", "ana@x", "joão"] {
            assert_eq!(
                Login::parse(login),
                Err(
                    "may contain only lowercase letters a-z, digits, dots, underscores and hyphens"
                ),
                "{login}"
            );
        }
    }

    #[test]
    fn profiles_are_the_three_options() {
        assert_eq!(Profile::parse(" agent "), Ok(Profile::Agent));
        assert_eq!(Profile::parse("supervisor"), Ok(Profile::Supervisor));
        assert_eq!(Profile::parse("admin"), Ok(Profile::Admin));
        assert_eq!(Profile::parse(""), Err(MISSING));
        assert_eq!(Profile::parse("root"), Err("must be one of agent, supervisor, admin"));
    }

    #[test]
    fn fields_parse_from_their_names() {
        for field in [Field::Name, Field::Email, Field::Login, Field::Profile] {
            assert_eq!(Field::parse(field.as_str()), Some(field));
        }
        assert_eq!(Field::parse("password"), None);
    }

    #[test]
    fn a_draft_reports_its_first_invalid_field() {
        let mut draft = Draft::default();
        draft.set(Field::Name, "Ana".into());
        draft.set(Field::Email, "nope".into());
        let error = NewUser::parse(&draft).unwrap_err();
        assert_eq!(error.to_string(), "email: not a valid e-mail address");

        draft.set(Field::Email, "ana@example.com".into());
        let error = NewUser::parse(&draft).unwrap_err();
        assert_eq!(error.to_string(), "login: missing");

        let mut overrides = Draft::default();
        overrides.set(Field::Login, "ana".into());
        overrides.set(Field::Profile, "admin".into());
        let user = NewUser::parse(&draft.overlaid_with(overrides)).unwrap();
        assert_eq!(user.login.as_str(), "ana");
        assert_eq!(user.profile, Profile::Admin);
    }
}

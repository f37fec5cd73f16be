//! Field-less enums that travel by name (statuses, systems, incident kinds): the
//! [`named_enum!`](crate::named_enum) macro that gives such an enum its names, and
//! [`UnknownValue`], the error for a name that is none of them.

/// serde, for the code [`named_enum!`](crate::named_enum) expands to in other crates.
#[doc(hidden)]
pub use serde as __serde;

/// A value that is not one of the names a field accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} '{value}'; expected one of {expected}")]
pub struct UnknownValue {
    /// Which field was being parsed (`system`, `status`, …).
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// The accepted names, comma separated.
    pub expected: String,
}

impl UnknownValue {
    /// An error for `value`, which is none of `expected`.
    pub fn new(field: &'static str, value: &str, expected: &[&str]) -> Self {
        UnknownValue { field, value: value.to_owned(), expected: expected.join(", ") }
    }
}

/// Gives a field-less enum its names: `ALL` (every value, in the order listed), `as_str`,
/// `Display`, and `FromStr` and `Deserialize` that read a name in any case and around spaces
/// (`running` is `RUNNING`) and refuse any other with an [`UnknownValue`] naming `$field` and
/// the accepted names.
///
/// `Serialize` stays derived, with the `rename_all` that writes the same names, so OpenAPI
/// schemas derived from the enum list them too; each enum's tests check that the two agree.
///
/// ```
/// use broker_config::named_enum;
///
/// #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
/// #[serde(rename_all = "lowercase")]
/// enum Colour {
///     Red,
///     Green,
/// }
///
/// named_enum!(Colour, "colour", { Red => "red", Green => "green" });
///
/// assert_eq!(" GREEN ".parse::<Colour>(), Ok(Colour::Green));
/// assert_eq!(Colour::ALL, [Colour::Red, Colour::Green]);
/// assert_eq!(
///     "blue".parse::<Colour>().unwrap_err().to_string(),
///     "unknown colour 'blue'; expected one of red, green"
/// );
/// ```
#[macro_export]
macro_rules! named_enum {
    ($ty:ident, $field:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in a stable order.
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// The name used in the API, the database and messages.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> $crate::names::__serde::Deserialize<'de> for $ty {
            /// Reads the name in any case, as [`FromStr`](::core::str::FromStr) does.
            fn deserialize<D>(deserializer: D) -> ::core::result::Result<Self, D::Error>
            where
                D: $crate::names::__serde::Deserializer<'de>,
            {
                let text = <::std::borrow::Cow<'de, str> as $crate::names::__serde::Deserialize>::deserialize(
                    deserializer,
                )?;
                text.parse().map_err(<D::Error as $crate::names::__serde::de::Error>::custom)
            }
        }

        impl ::core::str::FromStr for $ty {
            type Err = $crate::UnknownValue;

            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                $ty::ALL
                    .into_iter()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| $crate::UnknownValue::new($field, s, &[$($name),+]))
            }
        }
    };
}
